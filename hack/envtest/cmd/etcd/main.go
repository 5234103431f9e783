// Command etcd is a single-member etcd built on go.etcd.io/etcd/server/v3/embed.
//
// It accepts the subset of the real etcd flags that test harnesses (envtest,
// ours) pass, so a KUBEBUILDER_ASSETS etcd and this one are interchangeable.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func parseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("bad URL %q: %w", part, err)
		}
		out = append(out, *u)
	}
	return out, nil
}

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd data (required)")
	listenClient := flag.String("listen-client-urls", "http://127.0.0.1:2379", "client URLs to listen on")
	advertiseClient := flag.String("advertise-client-urls", "", "client URLs to advertise (default: listen-client-urls)")
	listenPeer := flag.String("listen-peer-urls", "http://127.0.0.1:0", "peer URLs to listen on")
	noFsync := flag.Bool("unsafe-no-fsync", false, "skip fsync (test data only)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn, error")
	flag.Parse()

	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir is required")
		os.Exit(2)
	}
	if *advertiseClient == "" {
		*advertiseClient = *listenClient
	}

	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.LogLevel = *logLevel
	cfg.UnsafeNoFsync = *noFsync
	var err error
	if cfg.ListenClientUrls, err = parseURLs(*listenClient); err != nil {
		fail(err)
	}
	if cfg.AdvertiseClientUrls, err = parseURLs(*advertiseClient); err != nil {
		fail(err)
	}
	if cfg.ListenPeerUrls, err = parseURLs(*listenPeer); err != nil {
		fail(err)
	}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fail(err)
	}
	defer e.Close()

	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready on %s\n", *listenClient)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		fail(fmt.Errorf("not ready after 60s"))
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %s, stopping\n", s)
	case err := <-e.Err():
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
	os.Exit(1)
}
