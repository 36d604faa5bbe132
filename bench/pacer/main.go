// pacer: an open-loop, constant-rate HTTP/1.1 load generator that stays light on a 2-core machine.
//
// Why not vegeta: at 20,000 requests/s vegeta itself used 1.2 of this machine's 2 cores (net/http,
// a goroutine and a result record per request), so nginx's own p99 read 5.2 ms and the server under
// test was starved. pacer writes one fixed request on each keep-alive connection and reads the
// response head and body by Content-Length: a few microseconds of CPU per request.
//
// Schedule: `-c` connections share `-rate`; connection i sends its k-th request at
// start + (k*c + i)/rate. Latency is measured from that scheduled time, not from when the request
// was written, so a response that comes late delays the next send and the delay is counted
// (the coordinated-omission correction of wrk2). A connection that falls behind sends at once
// until it is back on schedule; the achieved rate is reported next to the target.
//
// Output: one JSON object on stdout: requests, achieved rate, p50/p90/p99/p999/max in ms from the
// scheduled times, service_p50/p99 from the moment each request was written (what wrk reports),
// status counts, errors, this process's CPU seconds. Run it with GOMAXPROCS=1: with more, Go's idle
// threads spin between the requests and the generator takes a core of its own.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type connResult struct {
	latencies []time.Duration // from the scheduled send time (coordinated omission corrected)
	service   []time.Duration // from the moment the request was written
	statuses  map[int]int
	errors    []string
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server host:port")
	path := flag.String("path", "/", "request path")
	host := flag.String("host", "localhost", "Host header")
	rate := flag.Int("rate", 1000, "requests per second, all connections together")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	conns := flag.Int("c", 64, "keep-alive connections")
	flag.Parse()
	if *rate <= 0 || *conns <= 0 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "pacer: -rate, -c and -duration must be positive")
		os.Exit(2)
	}

	request := []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *host + "\r\nUser-Agent: pacer\r\n\r\n")
	interval := time.Duration(float64(time.Second) * float64(*conns) / float64(*rate))
	start := time.Now().Add(100 * time.Millisecond)
	end := start.Add(*duration)
	results := make([]*connResult, *conns)
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		offset := time.Duration(float64(time.Second) * float64(i) / float64(*rate))
		go func(i int) {
			defer wg.Done()
			results[i] = run(*addr, request, start.Add(offset), interval, end)
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	report(results, *rate, elapsed)
}

// run sends on one connection from `first`, every `interval`, until `end`; reconnects after an error.
func run(addr string, request []byte, first time.Time, interval time.Duration, end time.Time) *connResult {
	res := &connResult{statuses: map[int]int{}}
	expected := int(end.Sub(first)/interval) + 1
	res.latencies = make([]time.Duration, 0, expected)
	res.service = make([]time.Duration, 0, expected)
	var conn net.Conn
	var reader *bufio.Reader
	reused := false // whether conn has answered a request already
	for due := first; due.Before(end); due = due.Add(interval) {
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		if conn == nil {
			var err error
			if conn, reader, err = dial(addr); err != nil {
				res.errors = append(res.errors, err.Error())
				continue
			}
			reused = false
		}
		sent := time.Now()
		status, keep, err := roundTrip(conn, reader, request)
		if err != nil && reused {
			// The server closed an idle or used-up keep-alive connection (nginx after
			// keepalive_requests): reconnect and send this request again, as HTTP clients do.
			conn.Close()
			conn, reader, err = dial(addr)
			if err == nil {
				sent = time.Now()
				status, keep, err = roundTrip(conn, reader, request)
			}
		}
		if err != nil {
			res.errors = append(res.errors, err.Error())
			if conn != nil {
				conn.Close()
			}
			conn = nil
			continue
		}
		now := time.Now()
		res.latencies = append(res.latencies, now.Sub(due))
		res.service = append(res.service, now.Sub(sent))
		res.statuses[status]++
		reused = keep
		if !keep {
			conn.Close()
			conn = nil
		}
	}
	if conn != nil {
		conn.Close()
	}
	return res
}

func dial(addr string) (net.Conn, *bufio.Reader, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	return conn, bufio.NewReaderSize(conn, 16384), nil
}

// roundTrip writes the request and reads one response: status line, headers, Content-Length body.
// keep is false when the server said Connection: close.
func roundTrip(conn net.Conn, reader *bufio.Reader, request []byte) (status int, keep bool, err error) {
	if _, err = conn.Write(request); err != nil {
		return 0, false, err
	}
	line, err := reader.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	fields := strings.Fields(string(line))
	if len(fields) < 2 {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(fields[1]); err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	length, keep := 0, true
	for {
		header, err := reader.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if len(header) <= 2 { // the blank line after the headers
			break
		}
		name, value, _ := strings.Cut(string(header), ":")
		switch strings.ToLower(name) {
		case "content-length":
			if length, err = strconv.Atoi(strings.TrimSpace(value)); err != nil {
				return 0, false, fmt.Errorf("bad content-length %q", header)
			}
		case "connection":
			keep = !strings.EqualFold(strings.TrimSpace(value), "close")
		}
	}
	if length > 0 {
		if _, err := reader.Discard(length); err != nil {
			return 0, false, err
		}
	}
	return status, keep, nil
}

func report(results []*connResult, rate int, elapsed time.Duration) {
	var all, service []time.Duration
	statuses := map[string]int{}
	var errors []string
	for _, r := range results {
		all = append(all, r.latencies...)
		service = append(service, r.service...)
		for code, n := range r.statuses {
			statuses[strconv.Itoa(code)] += n
		}
		errors = append(errors, r.errors...)
	}
	pct := func(sorted []time.Duration, p float64) float64 {
		if len(sorted) == 0 {
			return 0
		}
		i := int(p * float64(len(sorted)))
		if i >= len(sorted) {
			i = len(sorted) - 1
		}
		return float64(sorted[i].Microseconds()) / 1000
	}
	for _, d := range [][]time.Duration{all, service} {
		sort.Slice(d, func(a, b int) bool { return d[a] < d[b] })
	}
	var usage syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	cpu := time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
	if len(errors) > 20 {
		errors = append(errors[:20], fmt.Sprintf("... and %d more", len(errors)-20))
	}
	out := map[string]any{
		"requests": len(all), "target_rate": rate, "rate": float64(len(all)) / elapsed.Seconds(),
		"p50_ms": pct(all, 0.50), "p90_ms": pct(all, 0.90), "p99_ms": pct(all, 0.99),
		"p999_ms": pct(all, 0.999), "max_ms": pct(all, 1.0),
		"service_p50_ms": pct(service, 0.50), "service_p99_ms": pct(service, 0.99),
		"status_codes": statuses, "errors": errors, "cpu_seconds": cpu.Seconds(),
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
