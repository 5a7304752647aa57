<?php
// Dispatches jobs as an app does, `ProcessReport::dispatch($id)->onQueue($queue)`,
// through Laravel's Bus dispatcher and RedisQueue, and prints each payload
// exactly as it was sent to Redis, one per line.
//
//   php dispatch.php QUEUE COUNT [--delay=SECONDS] [--class=ProcessReport]
//                    [--start=FIRST_REPORT_ID]
//
// Report ids run from --start (default 1). --class is one of jobs.php's
// (ProcessReport, RetriedReport, TriedOnceReport, FailingReport).

declare(strict_types=1);

use Illuminate\Redis\Events\CommandExecuted;

$container = require __DIR__.'/bootstrap.php';

$positional = [];
$options = ['delay' => null, 'class' => 'ProcessReport', 'start' => '1'];
foreach (array_slice($argv, 1) as $arg) {
    if (preg_match('/^--([a-z-]+)=(.*)$/', $arg, $m) && array_key_exists($m[1], $options)) {
        $options[$m[1]] = $m[2];
    } elseif (str_starts_with($arg, '--')) {
        fwrite(STDERR, "dispatch.php: unknown option {$arg}\n");
        exit(2);
    } else {
        $positional[] = $arg;
    }
}
if (count($positional) !== 2 || ! ctype_digit($positional[1])) {
    fwrite(STDERR, "usage: php dispatch.php QUEUE COUNT [--delay=S] [--class=ProcessReport] [--start=N]\n");
    exit(2);
}
[$queue, $count] = [$positional[0], (int) $positional[1]];
$class = 'App\\Jobs\\'.$options['class'];
if (! class_exists($class)) {
    fwrite(STDERR, "dispatch.php: no job class {$class} in jobs.php\n");
    exit(2);
}

// The payload as sent: the last argument of the push script (EVAL) or of
// the ZADD onto :delayed.
$redis = $container['redis'];
$redis->enableEvents();
$container['events']->listen(CommandExecuted::class, function (CommandExecuted $e) {
    $payload = null;
    if ($e->command === 'eval') {
        $args = $e->parameters[1];
        $payload = end($args);
    } elseif ($e->command === 'zadd') {
        $payload = end($e->parameters);
    }
    if (is_string($payload) && str_starts_with($payload, '{')) {
        fwrite(STDOUT, $payload."\n");
    }
});

for ($i = 0; $i < $count; $i++) {
    $pending = $class::dispatch((int) $options['start'] + $i)->onQueue($queue);
    if ($options['delay'] !== null) {
        $pending->delay((int) $options['delay']);
    }
    // PendingDispatch dispatches when destroyed, as at the end of a
    // controller's statement.
    unset($pending);
}
