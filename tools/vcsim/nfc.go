// NFC uploads kept for the tests.
//
// ESX writes a disk posted to an import lease's device URL into the VM's thin disk; vcsim
// reads the body and throws it away. With -nfc-dir, every NFC PUT or POST body is also
// written to DIR/<lease>/<file> (the last two parts of the URL path), with the request's
// Content-Type in <file>.content-type, so that a test can check what a client sent with
// independent tools (qemu-img reads the stream-optimized VMDK).
package main

import (
	"io"
	"io/ioutil"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

func withKeptUploads(inner http.Handler, dir string) http.Handler {
	if dir == "" {
		return inner
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(r.URL.Path, "/")
		if !strings.HasPrefix(r.URL.Path, "/nfc/") || len(parts) < 4 ||
			(r.Method != http.MethodPut && r.Method != http.MethodPost) {
			inner.ServeHTTP(w, r)
			return
		}
		lease, name := filepath.Base(parts[len(parts)-2]), filepath.Base(parts[len(parts)-1])
		to := filepath.Join(dir, lease)
		if err := os.MkdirAll(to, 0o755); err != nil {
			log.Printf("nfc keep: %v", err)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		f, err := os.Create(filepath.Join(to, name))
		if err != nil {
			log.Printf("nfc keep: %v", err)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		defer f.Close()
		_ = ioutil.WriteFile(filepath.Join(to, name+".content-type"),
			[]byte(r.Header.Get("Content-Type")), 0o644)
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.TeeReader(r.Body, f), r.Body}
		inner.ServeHTTP(w, r)
	})
}
