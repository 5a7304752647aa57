<?php
// Laravel's failed-job table (`database-uuids`, Laravel 8's default) read
// and written with Laravel's own DatabaseUuidFailedJobProvider.
//
//   php failed.php create-table   Laravel's failed_jobs migration (the
//                                 queue:failed-table stub), if absent
//   php failed.php drop-table     drops it, if present
//   php failed.php list           the rows, newest first, one JSON object a
//                                 line: uuid, connection, queue, payload,
//                                 exception, failed_at
//   php failed.php retry UUID     what `php artisan queue:retry UUID` does:
//                                 attempts reset, retryUntil refreshed, the
//                                 payload pushed raw to its connection and
//                                 queue, the row forgotten
//   php failed.php log QUEUE [MESSAGE] < payload
//                                 provider->log('redis', QUEUE, payload,
//                                 new RuntimeException(MESSAGE)), as the
//                                 worker logs a failed job; prints the uuid
//
// The database and table come from DB_* and FAILED_TABLE (bootstrap.php).

declare(strict_types=1);

use Illuminate\Contracts\Encryption\Encrypter;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Queue\Events\JobRetryRequested;
use Illuminate\Support\Str;

$container = require __DIR__.'/bootstrap.php';
$failer = $container['queue.failer'];
$table = env_or('FAILED_TABLE', 'failed_jobs');
$schema = fn () => $container['db.capsule']->getConnection('default')->getSchemaBuilder();

function usage(): never
{
    fwrite(STDERR, "usage: php failed.php create-table | drop-table | list | retry UUID | log QUEUE [MESSAGE] < payload\n");
    exit(2);
}

// RetryCommand::resetAttempts and ::refreshRetryUntil, Laravel 8.83.
function reset_attempts(string $payload): string
{
    $payload = json_decode($payload, true);
    if (isset($payload['attempts'])) {
        $payload['attempts'] = 0;
    }

    return json_encode($payload);
}

function refresh_retry_until(string $payload, $container): string
{
    $payload = json_decode($payload, true);
    if (! isset($payload['data']['command'])) {
        return json_encode($payload);
    }
    if (Str::startsWith($payload['data']['command'], 'O:')) {
        $instance = unserialize($payload['data']['command']);
    } elseif ($container->bound(Encrypter::class)) {
        $instance = unserialize($container->make(Encrypter::class)->decrypt($payload['data']['command']));
    }
    if (! isset($instance)) {
        throw new RuntimeException('Unable to extract job payload.');
    }
    if (is_object($instance) && ! $instance instanceof \__PHP_Incomplete_Class && method_exists($instance, 'retryUntil')) {
        $retryUntil = $instance->retryUntil();
        $payload['retryUntil'] = $retryUntil instanceof DateTimeInterface
            ? $retryUntil->getTimestamp()
            : $retryUntil;
    }

    return json_encode($payload);
}

switch ($argv[1] ?? '') {
    case 'create-table':
        // Illuminate/Queue/Console/stubs/failed_jobs.stub
        if (! $schema()->hasTable($table)) {
            $schema()->create($table, function (Blueprint $table) {
                $table->id();
                $table->string('uuid')->unique();
                $table->text('connection');
                $table->text('queue');
                $table->longText('payload');
                $table->longText('exception');
                $table->timestamp('failed_at')->useCurrent();
            });
        }
        break;

    case 'drop-table':
        $schema()->dropIfExists($table);
        break;

    case 'list':
        foreach ($failer->all() as $row) {
            // all() renames uuid to id.
            fwrite(STDOUT, json_encode([
                'uuid' => $row->id,
                'connection' => $row->connection,
                'queue' => $row->queue,
                'payload' => $row->payload,
                'exception' => $row->exception,
                'failed_at' => (string) $row->failed_at,
            ], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE)."\n");
        }
        break;

    case 'retry':
        $id = $argv[2] ?? usage();
        $job = $failer->find($id);
        if (is_null($job)) {
            fwrite(STDERR, "Unable to find failed job with ID [{$id}].\n");
            exit(1);
        }
        $container['events']->dispatch(new JobRetryRequested($job));
        $container['queue']->connection($job->connection)->pushRaw(
            refresh_retry_until(reset_attempts($job->payload), $container), $job->queue
        );
        fwrite(STDOUT, "The failed job [{$id}] has been pushed back onto the queue!\n");
        $failer->forget($id);
        break;

    case 'log':
        $queue = $argv[2] ?? usage();
        $payload = stream_get_contents(STDIN);
        $uuid = $failer->log('redis', $queue, rtrim($payload, "\n"),
            new RuntimeException($argv[3] ?? 'failed by failed.php log'));
        fwrite(STDOUT, $uuid."\n");
        break;

    default:
        usage();
}
