<?php
// The jobs an app would keep in app/Jobs, as `php artisan make:job`
// writes them. Each one's handle() records that it ran: an RPUSH of
// {"job", "uuid", "reportId", "attempts", "queue"} onto the Redis list
// HANDLED_LIST (under the prefix), and, when POST_URL is set, a POST of
// {"report": id} there (a non-2xx answer throws, so the job is retried).

declare(strict_types=1);

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;
use RuntimeException;

trait RecordsRuns
{
    protected function record(int $reportId): void
    {
        $list = getenv('HANDLED_LIST') ?: 'interop:handled';
        app('redis')->connection()->rpush($list, json_encode([
            'job' => static::class,
            'uuid' => $this->job ? $this->job->uuid() : null,
            'reportId' => $reportId,
            'attempts' => $this->attempts(),
            'queue' => $this->job ? $this->job->getQueue() : null,
        ]));

        $url = getenv('POST_URL');
        if ($url !== false && $url !== '') {
            $context = stream_context_create(['http' => [
                'method' => 'POST',
                'header' => "Content-Type: application/json\r\n",
                'content' => json_encode(['report' => $reportId]),
                'timeout' => 30,
                'ignore_errors' => true,
            ]]);
            $body = @file_get_contents($url, false, $context);
            $status = isset($http_response_header[0])
                ? (int) (explode(' ', $http_response_header[0])[1] ?? 0)
                : 0;
            if ($body === false || $status < 200 || $status > 299) {
                throw new RuntimeException("POST {$url} answered {$status}");
            }
        }
    }
}

/** A report to build: properties of every kind serialize() writes. */
class ProcessReport implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, RecordsRuns;

    public int $reportId;
    protected string $format = 'pdf';
    private ?array $options;
    public float $ratio = 0.75;
    public bool $urgent = true;
    public $note = null;
    public array $filters = [
        'region' => ['eu', 'us'],
        'range' => ['from' => 1, 'to' => 31],
        'tags' => [],
        'label' => "caf\u{e9} \"quoted\" / slashed",
    ];

    public function __construct(int $reportId, ?array $options = ['locale' => 'fr', 'pages' => [1, 2]])
    {
        $this->reportId = $reportId;
        $this->options = $options;
    }

    public function handle(): void
    {
        $this->record($this->reportId);
    }
}

/** A job with its own retry policy: three tries, 1 s then 2 s apart. */
class RetriedReport implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, RecordsRuns;

    public $tries = 3;
    public $backoff = [1, 2];
    public int $reportId;

    public function __construct(int $reportId)
    {
        $this->reportId = $reportId;
    }

    public function handle(): void
    {
        $this->record($this->reportId);
    }
}

/** A job allowed one try that succeeds: a second attempt is failed unrun. */
class TriedOnceReport implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, RecordsRuns;

    public $tries = 1;
    public int $reportId;

    public function __construct(int $reportId)
    {
        $this->reportId = $reportId;
    }

    public function handle(): void
    {
        $this->record($this->reportId);
    }
}

/** A job that always throws: after its one try, a failed_jobs row. */
class FailingReport implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, RecordsRuns;

    public $tries = 1;
    public int $reportId;

    public function __construct(int $reportId)
    {
        $this->reportId = $reportId;
    }

    public function handle(): void
    {
        $this->record($this->reportId);
        throw new RuntimeException("report {$this->reportId} cannot be built");
    }
}

namespace App\Handlers;

/**
 * A string job's handler, `Queue::push('App\Handlers\RecordData@handle', $data)`:
 * Laravel calls handle($job, $data). It records the data and deletes the job.
 */
class RecordData
{
    public function handle($job, $data): void
    {
        $list = getenv('HANDLED_LIST') ?: 'interop:handled';
        app('redis')->connection()->rpush($list, json_encode([
            'job' => static::class,
            'uuid' => $job->uuid(),
            'data' => $data,
            'attempts' => $job->attempts(),
            'queue' => $job->getQueue(),
        ]));
        $job->delete();
    }
}
