// The Go baselines for bench/pool.sh: the two plain patterns people write,
// standard library only.
//
//	chan_semaphore: a buffered channel as a semaphore, one goroutine per task
//	workers:        a fixed set of goroutines reading tasks from a channel
//
// Prints one JSON line in the same shape as sluice-pool's pool-bench.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func work(sleep time.Duration) {
	if sleep > 0 {
		time.Sleep(sleep)
	}
}

func chanSemaphore(tasks, concurrency int, sleep time.Duration) {
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i := 0; i < tasks; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(sleep)
			<-sem
		}()
	}
	wg.Wait()
}

func workers(tasks, concurrency int, sleep time.Duration) {
	jobs := make(chan int, concurrency)
	var wg sync.WaitGroup
	wg.Add(concurrency)
	for w := 0; w < concurrency; w++ {
		go func() {
			defer wg.Done()
			for range jobs {
				work(sleep)
			}
		}()
	}
	for i := 0; i < tasks; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

func peakRSSMB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(strings.TrimPrefix(line, "VmHWM:"))
			kb, _ := strconv.ParseFloat(f[0], 64)
			return kb / 1024
		}
	}
	return 0
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func round(x float64, places int) float64 {
	p := 1.0
	for i := 0; i < places; i++ {
		p *= 10
	}
	return float64(int64(x*p+0.5)) / p
}

func main() {
	mode := flag.String("mode", "workers", "chan_semaphore or workers")
	tasks := flag.Int("tasks", 1000000, "number of tasks")
	concurrency := flag.Int("concurrency", 1000, "tasks at once")
	sleepMs := flag.Int("sleep-ms", 0, "each task sleeps this long (0: no-op)")
	flag.Parse()

	sleep := time.Duration(*sleepMs) * time.Millisecond
	start := time.Now()
	switch *mode {
	case "chan_semaphore":
		chanSemaphore(*tasks, *concurrency, sleep)
	case "workers":
		workers(*tasks, *concurrency, sleep)
	default:
		fmt.Fprintf(os.Stderr, "go-pool-bench: unknown mode %q: chan_semaphore or workers\n", *mode)
		os.Exit(2)
	}
	wall := time.Since(start)
	out, _ := json.Marshal(map[string]interface{}{
		"impl":          "go",
		"mode":          *mode,
		"tasks":         *tasks,
		"concurrency":   *concurrency,
		"sleep_ms":      *sleepMs,
		"wall_ms":       round(wall.Seconds()*1000, 1),
		"peak_rss_mb":   round(peakRSSMB(), 1),
		"cpu_s":         round(cpuSeconds(), 2),
		"tasks_per_sec": round(float64(*tasks)/wall.Seconds(), 0),
	})
	fmt.Println(string(out))
}
