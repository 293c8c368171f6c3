// vcsim: govmomi's vSphere API simulator as a test server for vdar's vSphere client tests.
//
// Built in GOPATH mode from Debian's golang-github-vmware-govmomi-dev (see tools/build-vcsim.sh).
// On stdout it prints, one per line and in this order, then flushes:
//
//	VCSIM_URL=http://127.0.0.1:PORT/sdk
//	VCSIM_THUMBPRINT=AA:BB:...   (only with -tls: SHA-256 of the server certificate, DER)
//	VCSIM_CERT=/tmp/vcsim-...    (only with -tls: the certificate as PEM)
//	VCSIM_DATASTORE name=/local/dir   (one line per datastore)
//	VCSIM_READY
//
// It runs until SIGTERM/SIGINT, or until its stdin reaches EOF (so a test that dies does not
// leave it behind; pass -stdin-watch=false to run it by hand with stdin at /dev/null). On exit it
// removes the datastores' temporary directories.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func selfSigned(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vcsim", Organization: []string{"vdar test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	esx := flag.Bool("esx", false, "simulate a standalone ESXi host instead of vCenter")
	vms := flag.Int("vm", -1, "VMs per host / cluster resource pool (Model.Machine; default: model's, 2)")
	hosts := flag.Int("host", -1, "standalone hosts per datacenter (Model.Host; vCenter only; default 1)")
	clusters := flag.Int("cluster", -1, "clusters per datacenter (Model.Cluster; vCenter only; default 1)")
	clusterHosts := flag.Int("cluster-host", -1, "hosts per cluster (Model.ClusterHost; default 3)")
	datastores := flag.Int("ds", -1, "local datastores per datacenter (Model.Datastore; default 1)")
	autostart := flag.Bool("autostart", true, "power on the model's VMs")
	useTLS := flag.Bool("tls", false, "serve HTTPS with a fresh self-signed certificate")
	username := flag.String("username", "user", "the only user name Login accepts")
	password := flag.String("password", "pass", "the only password Login accepts")
	trace := flag.Bool("trace", false, "write every SOAP request and response to stderr")
	stdinWatch := flag.Bool("stdin-watch", true, "exit when stdin reaches EOF")
	cbtPage := flag.Int("cbt-page", 1000, "most areas in one QueryChangedDiskAreas answer (see cbt.go)")
	nfcDir := flag.String("nfc-dir", "", "keep every NFC upload under this directory (see nfc.go)")
	flag.Parse()

	log.SetPrefix("vcsim: ")
	log.SetFlags(0)

	var m *simulator.Model
	if *esx {
		m = simulator.ESX()
	} else {
		m = simulator.VPX()
	}
	set := func(dst *int, v int) {
		if v >= 0 {
			*dst = v
		}
	}
	set(&m.Machine, *vms)
	set(&m.Host, *hosts)
	set(&m.Cluster, *clusters)
	set(&m.ClusterHost, *clusterHosts)
	set(&m.Datastore, *datastores)
	m.Autostart = *autostart
	simulator.Trace = *trace

	if err := m.Create(); err != nil {
		log.Fatalf("creating model: %v", err)
	}
	// A distinct *url.Userinfo (not simulator.DefaultLogin) makes Login check the exact pair;
	// with DefaultLogin any non-empty user name and password would be accepted.
	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}

	var cert []byte
	if *useTLS {
		host, _, err := net.SplitHostPort(*listen)
		if err != nil {
			log.Fatalf("bad -listen %q: %v", *listen, err)
		}
		c, err := selfSigned([]string{host, "127.0.0.1", "::1", "localhost"})
		if err != nil {
			log.Fatalf("generating certificate: %v", err)
		}
		cert = c.Certificate[0]
		m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{c}}
	}

	s := m.Service.NewServer()
	// Set before the URL is printed, so before any client can connect.
	if *cbtPage < 1 {
		log.Fatalf("-cbt-page must be at least 1")
	}
	s.Config.Handler = withChangedAreas(s.Config.Handler, s.URL.Path, *cbtPage)
	s.Config.Handler = withKeptUploads(s.Config.Handler, *nfcDir)

	cleanup := func() {
		s.Close()
		m.Remove()
	}

	out := bufio.NewWriter(os.Stdout)
	u := *s.URL
	u.User = nil
	fmt.Fprintf(out, "VCSIM_URL=%s\n", u.String())
	if cert != nil {
		fmt.Fprintf(out, "VCSIM_THUMBPRINT=%s\n", thumbprint(cert))
		if f, err := s.CertificateFile(); err == nil {
			fmt.Fprintf(out, "VCSIM_CERT=%s\n", f)
		}
	}
	type dsLine struct{ name, dir string }
	var lines []dsLine
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		lines = append(lines, dsLine{ds.Name, ds.Info.GetDatastoreInfo().Url})
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].name < lines[j].name })
	for _, l := range lines {
		fmt.Fprintf(out, "VCSIM_DATASTORE %s=%s\n", l.name, l.dir)
	}
	fmt.Fprintln(out, "VCSIM_READY")
	if err := out.Flush(); err != nil {
		cleanup()
		os.Exit(1)
	}

	done := make(chan string, 2)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() { done <- (<-sig).String() }()
	if *stdinWatch {
		go func() {
			_, _ = io.Copy(ioutil.Discard, os.Stdin)
			done <- "stdin closed"
		}()
	}

	why := <-done
	log.Printf("exiting: %s", why)
	cleanup()
}
