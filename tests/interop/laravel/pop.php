<?php
// Pops one job with Laravel's RedisQueue::pop() (migrating due delayed
// and expired reserved jobs first, as a worker does) and writes the
// reserved member, RedisJob::getReservedJob(), to stdout byte for byte,
// with no newline. The job is neither deleted nor released: it stays in
// `:reserved` until retry_after, as if the worker had died holding it.
// Exits 1 when the queue has nothing ready.
//
//   php pop.php QUEUE

declare(strict_types=1);

$container = require __DIR__.'/bootstrap.php';

if (count($argv) !== 2) {
    fwrite(STDERR, "usage: php pop.php QUEUE\n");
    exit(2);
}
$job = $container['queue']->connection('redis')->pop($argv[1]);
if ($job === null) {
    fwrite(STDERR, "pop.php: nothing ready on {$argv[1]}\n");
    exit(1);
}
fwrite(STDOUT, $job->getReservedJob());
