<?php
// Laravel 8's queue outside a full app: the container bindings
// `php artisan queue:work redis` relies on, built from Debian's
// php-laravel-framework (no composer, no network). Every script here
// requires this file, which returns the container.
//
// Settings, from the environment (defaults in brackets):
//   REDIS_HOST [127.0.0.1]  REDIS_PORT [6379]  REDIS_DB [0]
//   REDIS_PREFIX [laravel_database_]   `database.redis.options.prefix`
//   QUEUE [default]                    the connection's default queue
//   RETRY_AFTER [90]  BLOCK_FOR [none] the `redis` queue connection's
//   APP_KEY [a fixed test key]         base64:..., for encrypted jobs
//   DB_DRIVER [mysql|pgsql]  DB_HOST [127.0.0.1]  DB_PORT [3306 / 5432]
//   DB_DATABASE [test]  DB_USERNAME [root / postgres]  DB_PASSWORD []
//   FAILED_TABLE [failed_jobs]         the `database-uuids` failed-job table
//   HANDLED_LIST [interop:handled]     where jobs record that they ran
//                                      (a Redis list, under the prefix)
//   POST_URL [none]                    jobs also POST {"report": id} here

declare(strict_types=1);

require_once '/usr/share/php/Illuminate/autoload.php';
require_once __DIR__.'/jobs.php';

use Illuminate\Bus\Dispatcher as BusDispatcher;
use Illuminate\Cache\ArrayStore;
use Illuminate\Cache\Repository as CacheRepository;
use Illuminate\Container\Container;
use Illuminate\Contracts\Debug\ExceptionHandler;
use Illuminate\Database\Capsule\Manager as DatabaseCapsule;
use Illuminate\Encryption\Encrypter;
use Illuminate\Events\Dispatcher as EventDispatcher;
use Illuminate\Queue\Capsule\Manager as QueueCapsule;
use Illuminate\Queue\Failed\DatabaseUuidFailedJobProvider;
use Illuminate\Redis\RedisManager;
use Illuminate\Support\DateFactory;
use Illuminate\Support\Facades\Facade;

function env_or(string $name, ?string $default): ?string
{
    $v = getenv($name);

    return ($v === false || $v === '') ? $default : $v;
}

/** Reports what the worker catches to stderr, as a console app would. */
final class StderrExceptionHandler implements ExceptionHandler
{
    public function report(Throwable $e)
    {
        fwrite(STDERR, '[exception] '.get_class($e).': '.$e->getMessage()."\n");
    }

    public function shouldReport(Throwable $e)
    {
        return true;
    }

    public function render($request, Throwable $e)
    {
        throw $e;
    }

    public function renderForConsole($output, Throwable $e)
    {
        fwrite(STDERR, (string) $e."\n");
    }
}

$container = new Container;
Container::setInstance($container);
$container->instance(Container::class, $container);
$container->instance(Illuminate\Contracts\Container\Container::class, $container);
// Date::now() in the failed-job provider goes through the facade.
Facade::setFacadeApplication($container);
$container->singleton('date', fn () => new DateFactory);

$events = new EventDispatcher($container);
$container->instance('events', $events);
$container->instance(Illuminate\Contracts\Events\Dispatcher::class, $events);

$container->instance(ExceptionHandler::class, new StderrExceptionHandler);

$key = env_or('APP_KEY', 'base64:'.base64_encode(str_repeat('k', 32)));
$encrypter = new Encrypter(
    str_starts_with($key, 'base64:') ? base64_decode(substr($key, 7)) : $key,
    'AES-256-CBC'
);
$container->instance('encrypter', $encrypter);
$container->instance(Illuminate\Contracts\Encryption\Encrypter::class, $encrypter);

// The Worker checks `illuminate:queue:restart` and counts maxExceptions in
// the cache; one process's memory is enough here.
$cache = new CacheRepository(new ArrayStore);
$container->instance('cache.store', $cache);
$container->instance(Illuminate\Contracts\Cache\Repository::class, $cache);

$redis = new RedisManager($container, 'phpredis', [
    'options' => ['prefix' => env_or('REDIS_PREFIX', 'laravel_database_')],
    'default' => [
        'host' => env_or('REDIS_HOST', '127.0.0.1'),
        'port' => (int) env_or('REDIS_PORT', '6379'),
        'database' => (int) env_or('REDIS_DB', '0'),
        'password' => env_or('REDIS_PASSWORD', null),
    ],
]);
$container->instance('redis', $redis);
$container->instance(Illuminate\Contracts\Redis\Factory::class, $redis);

$queue = new QueueCapsule($container);
$blockFor = env_or('BLOCK_FOR', null);
$queue->addConnection([
    'driver' => 'redis',
    'connection' => 'default',
    'queue' => env_or('QUEUE', 'default'),
    'retry_after' => (int) env_or('RETRY_AFTER', '90'),
    'block_for' => $blockFor === null ? null : (int) $blockFor,
    'after_commit' => false,
], 'redis');
$container['config']['queue.default'] = 'redis';
$queue->setAsGlobal();
$container->instance('queue', $queue->getQueueManager());
$container->instance(Illuminate\Contracts\Queue\Factory::class, $queue->getQueueManager());

$bus = new BusDispatcher($container, fn ($connection = null) => $container['queue']->connection($connection));
$container->instance(Illuminate\Contracts\Bus\Dispatcher::class, $bus);
$container->instance(Illuminate\Contracts\Bus\QueueingDispatcher::class, $bus);

$driver = env_or('DB_DRIVER', 'mysql');
$db = new DatabaseCapsule($container);
$db->addConnection([
    'driver' => $driver,
    'host' => env_or('DB_HOST', '127.0.0.1'),
    'port' => (int) env_or('DB_PORT', $driver === 'pgsql' ? '5432' : '3306'),
    'database' => env_or('DB_DATABASE', 'test'),
    'username' => env_or('DB_USERNAME', $driver === 'pgsql' ? 'postgres' : 'root'),
    'password' => env_or('DB_PASSWORD', ''),
    'charset' => $driver === 'pgsql' ? 'utf8' : 'utf8mb4',
    'collation' => $driver === 'pgsql' ? null : 'utf8mb4_unicode_ci',
    'prefix' => '',
]);
$container->instance('db', $db->getDatabaseManager());
$container->instance('queue.failer', new DatabaseUuidFailedJobProvider(
    $db->getDatabaseManager(), 'default', env_or('FAILED_TABLE', 'failed_jobs')
));
$container->instance('db.capsule', $db);

return $container;
