package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skep-io/skep/controlplane/client"
)

// BenchmarkAttacks repeats the security review's attacks on a real
// `skep server` process and reports what they cost it: its RSS growth, and
// the p99 of another client's GET while they run.
//
//   - amplification: a 1 MB YAML value aliased 300 times, 5 times over,
//     with the node-join token and with the admin's;
//   - slow bodies: 100 connections that send headers and trickle a body,
//     to the API with the join token and to the join endpoint.
//
// go test -run '^$' -bench Attacks -benchtime 1x ./cmd/skep/
func BenchmarkAttacks(b *testing.B) {
	for range b.N {
		attackRound(b)
	}
}

func attackRound(b *testing.B) {
	dir := b.TempDir()
	p := startServer(b, dir)
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		b.Fatal(err)
	}
	joinToken, err := os.ReadFile(filepath.Join(dir, "node-token"))
	if err != nil {
		b.Fatal(err)
	}
	join := strings.TrimSpace(string(joinToken))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cfg.CAPEM)
	tlsCfg := &tls.Config{RootCAs: pool}
	hc := &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxConnsPerHost: 0}}
	send := func(method, path, token, body string) int {
		req, _ := http.NewRequest(method, cfg.Server+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/yaml")
		resp, err := hc.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(http.MethodPost, "/api/v1/namespaces/default/configmaps", cfg.Token, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"probe"}}`); code != 201 {
		b.Fatalf("create the probe ConfigMap: %d", code)
	}

	// The other client: GETs in a loop, timed.
	var mu sync.Mutex
	var latencies []time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		other := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodGet, cfg.Server+"/api/v1/namespaces/default/configmaps/probe", nil)
			req.Header.Set("Authorization", "Bearer "+cfg.Token)
			start := time.Now()
			resp, err := other.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			mu.Lock()
			latencies = append(latencies, time.Since(start))
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	})

	rssBefore := rssOf(b, p.cmd.Process.Pid)
	bomb := aliasBombYAML(300)
	codes := map[string][]int{}
	for range 5 {
		codes["amplification, join token"] = append(codes["amplification, join token"], send(http.MethodPost, "/api/v1/namespaces/default/configmaps", join, bomb))
		codes["amplification, admin"] = append(codes["amplification, admin"], send(http.MethodPost, "/api/v1/namespaces/default/configmaps", cfg.Token, bomb))
	}
	// Slow bodies: 100 connections, half to the API, half to the join
	// endpoint, each trickling a byte a second for 20 s.
	var slow sync.WaitGroup
	var slowMu sync.Mutex
	for i := range 100 {
		path := "/api/v1/namespaces/default/configmaps"
		if i%2 == 1 {
			path = "/skep/v1/join"
		}
		slow.Go(func() {
			pr, pw := io.Pipe()
			go func() {
				defer pw.Close()
				for range 20 {
					if _, err := pw.Write([]byte(" ")); err != nil {
						return
					}
					time.Sleep(time.Second)
				}
			}()
			req, _ := http.NewRequest(http.MethodPost, cfg.Server+path, pr)
			req.Header.Set("Authorization", "Bearer "+join)
			req.Header.Set("Content-Type", "application/json")
			start := time.Now()
			resp, err := hc.Do(req)
			code := 0
			if err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			pr.CloseWithError(io.EOF)
			slowMu.Lock()
			key := fmt.Sprintf("slow body to %s", path)
			codes[key] = append(codes[key], code)
			codes[key+" (seconds held)"] = append(codes[key+" (seconds held)"], int(time.Since(start).Seconds()))
			slowMu.Unlock()
		})
	}
	slow.Wait()
	rssAfter := rssOf(b, p.cmd.Process.Pid)
	close(stop)
	wg.Wait()

	slices.Sort(latencies)
	p99 := latencies[len(latencies)*99/100]
	b.ReportMetric(float64(rssAfter-rssBefore)/(1<<20), "rss-growth-MiB")
	b.ReportMetric(float64(p99.Microseconds())/1000, "other-get-p99-ms")
	b.ReportMetric(float64(len(latencies)), "other-gets")
	for k, v := range codes {
		slices.Sort(v)
		b.Logf("%s: answers %v", k, compact(v))
	}
	b.Logf("server RSS %d MiB before, %d MiB after; another client's GET: %d requests, p50 %v, p99 %v, max %v",
		rssBefore>>20, rssAfter>>20, len(latencies), latencies[len(latencies)/2], p99, latencies[len(latencies)-1])
}

// compact prints a sorted list as value×count.
func compact(v []int) string {
	var parts []string
	for i := 0; i < len(v); {
		j := i
		for j < len(v) && v[j] == v[i] {
			j++
		}
		parts = append(parts, fmt.Sprintf("%d×%d", v[i], j-i))
		i = j
	}
	return strings.Join(parts, " ")
}

func aliasBombYAML(n int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  k0: &v %s\n", strings.Repeat("x", 1<<20))
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&sb, "  k%d: *v\n", i)
	}
	return sb.String()
}

// rssOf reads a process's resident set size from /proc.
func rssOf(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkUnpaginatedLists measures what whole lists cost other clients
// (pagination with limit/continue is the Kubernetes API issue's): 10
// clients list every one of SKEP_BENCH_OBJECTS ConfigMaps (default 10,000)
// in a loop for 20 s while another client GETs one, and the GET's p99 is
// reported.
//
// go test -run '^$' -bench UnpaginatedLists -benchtime 1x ./cmd/skep/
func BenchmarkUnpaginatedLists(b *testing.B) { benchmarkLists(b, 10000, 0) }

// BenchmarkPaginatedLists is issue 13's figure: ten clients page through
// 30,000 ConfigMaps with limit=500 (served from the watch cache's
// snapshot), while another client's GET is timed.
//
//	go test -run '^$' -bench PaginatedLists -benchtime 1x ./cmd/skep
func BenchmarkPaginatedLists(b *testing.B) { benchmarkLists(b, 30000, 500) }

// benchmarkLists fills a namespace with n ConfigMaps (SKEP_BENCH_OBJECTS
// overrides n), then runs ten clients listing it whole (limit 0) or in
// pages of limit, for 20 s, and reports another client's GET latency.
func benchmarkLists(b *testing.B, n, limit int) {
	if v, err := strconv.Atoi(os.Getenv("SKEP_BENCH_OBJECTS")); err == nil && v > 0 {
		n = v
	}
	for range b.N {
		p := startServer(b, b.TempDir())
		cfg, err := client.LoadConfig(p.config)
		if err != nil {
			b.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(cfg.CAPEM)
		hc := &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 32}}
		do := func(method, path, body string) (int, int64) {
			code, data := fetchAs(hc, cfg, method, path, body)
			return code, int64(len(data))
		}
		// list reads the whole collection, page by page when limit > 0,
		// and returns the bytes read.
		list := func() int64 {
			path := "/api/v1/namespaces/default/configmaps"
			if limit == 0 {
				_, size := do(http.MethodGet, path, "")
				return size
			}
			var total int64
			cont := ""
			for {
				_, data := fetchAs(hc, cfg, http.MethodGet, fmt.Sprintf("%s?limit=%d&continue=%s", path, limit, url.QueryEscape(cont)), "")
				total += int64(len(data))
				var page struct {
					Metadata struct{ Continue string } `json:"metadata"`
				}
				if json.Unmarshal(data, &page) != nil || page.Metadata.Continue == "" {
					return total
				}
				cont = page.Metadata.Continue
			}
		}
		// Fill the namespace, 16 writers at a time.
		var fill sync.WaitGroup
		work := make(chan int)
		for range 16 {
			fill.Go(func() {
				for i := range work {
					do(http.MethodPost, "/api/v1/namespaces/default/configmaps", fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%05d"},"data":{"k":"v"}}`, i))
				}
			})
		}
		for i := range n {
			work <- i
		}
		close(work)
		fill.Wait()

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var gets []time.Duration
		lists, listBytes := 0, int64(0)
		for range 10 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					size := list()
					mu.Lock()
					lists++
					listBytes = size
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				do(http.MethodGet, "/api/v1/namespaces/default/configmaps/cm-00000", "")
				mu.Lock()
				gets = append(gets, time.Since(start))
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		})
		time.Sleep(20 * time.Second)
		close(stop)
		wg.Wait()
		slices.Sort(gets)
		p99 := gets[len(gets)*99/100]
		b.ReportMetric(float64(p99.Microseconds())/1000, "other-get-p99-ms")
		b.ReportMetric(float64(lists)/20, "lists/s")
		b.Logf("%d ConfigMaps, pages of %d (0: whole): %d whole lists in 20 s (%d bytes each); another client's GET: %d requests, p50 %v, p99 %v, max %v",
			n, limit, lists, listBytes, len(gets), gets[len(gets)/2], p99, gets[len(gets)-1])
		p.stop()
	}
}

// fetchAs does one request with the admin's token and returns the status
// and the body (0 and nothing when the request failed).
func fetchAs(hc *http.Client, cfg client.Config, method, path, body string) (int, []byte) {
	req, _ := http.NewRequest(method, cfg.Server+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+cfg.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}
