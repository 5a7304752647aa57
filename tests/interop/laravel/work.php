<?php
// Laravel's own Illuminate\Queue\Worker on the `redis` connection, as
// `php artisan queue:work redis --queue=QUEUE` runs it: the same
// WorkerOptions, the same console lines, failed jobs logged to the
// failed-job provider (WorkCommand's JobFailed listener).
//
//   php work.php QUEUE [--stop-when-empty] [--once] [--max-jobs=N]
//                [--tries=N] [--backoff=S] [--sleep=S] [--timeout=S]
//                [--max-time=S] [--memory=MB] [--rest=S]
//
// Defaults are queue:work's: tries 1, backoff 0, sleep 3, timeout 60.
// Exits with the worker's status (0 once stopped when empty).

declare(strict_types=1);

use Illuminate\Contracts\Debug\ExceptionHandler;
use Illuminate\Queue\Events\JobFailed;
use Illuminate\Queue\Events\JobProcessed;
use Illuminate\Queue\Events\JobProcessing;
use Illuminate\Queue\Worker;
use Illuminate\Queue\WorkerOptions;
use Illuminate\Support\Carbon;

$container = require __DIR__.'/bootstrap.php';

$flags = ['stop-when-empty' => false, 'once' => false];
$values = ['max-jobs' => 0, 'tries' => 1, 'backoff' => 0, 'sleep' => 3, 'timeout' => 60,
    'max-time' => 0, 'memory' => 128, 'rest' => 0];
$queue = null;
foreach (array_slice($argv, 1) as $arg) {
    if (preg_match('/^--([a-z-]+)=(.*)$/', $arg, $m) && array_key_exists($m[1], $values)) {
        $values[$m[1]] = is_numeric($m[2]) ? $m[2] + 0 : $m[2];
    } elseif (str_starts_with($arg, '--') && array_key_exists(substr($arg, 2), $flags)) {
        $flags[substr($arg, 2)] = true;
    } elseif (! str_starts_with($arg, '--') && $queue === null) {
        $queue = $arg;
    } else {
        fwrite(STDERR, "work.php: unexpected argument {$arg}\n");
        exit(2);
    }
}
if ($queue === null) {
    fwrite(STDERR, "usage: php work.php QUEUE [--stop-when-empty] [--once] [--max-jobs=N] [--tries=N] [--backoff=S] [--sleep=S] [--timeout=S]\n");
    exit(2);
}

$events = $container['events'];
$line = function ($job, string $status) {
    fwrite(STDOUT, sprintf(
        "[%s][%s] %s %s\n",
        Carbon::now()->format('Y-m-d H:i:s'), $job->getJobId(), str_pad("{$status}:", 11), $job->resolveName()
    ));
};
$events->listen(JobProcessing::class, fn ($e) => $line($e->job, 'Processing'));
$events->listen(JobProcessed::class, fn ($e) => $line($e->job, 'Processed'));
$events->listen(JobFailed::class, function ($e) use ($line, $container) {
    $line($e->job, 'Failed');
    $container['queue.failer']->log(
        $e->connectionName, $e->job->getQueue(), $e->job->getRawBody(), $e->exception
    );
});

$worker = new Worker(
    $container['queue'],
    $events,
    $container[ExceptionHandler::class],
    fn () => false // never down for maintenance
);
$worker->setName('default')->setCache($container['cache.store']);

$options = new WorkerOptions(
    'default',
    $values['backoff'],
    $values['memory'],
    $values['timeout'],
    $values['sleep'],
    $values['tries'],
    false, // force
    $flags['stop-when-empty'],
    $values['max-jobs'],
    $values['max-time'],
    $values['rest']
);

$status = $flags['once']
    ? ($worker->runNextJob('redis', $queue, $options) ?? 0)
    : $worker->daemon('redis', $queue, $options);
exit((int) $status);
