// QueryChangedDiskAreas for vcsim, which lacks it (the call faults with MethodNotFound).
//
// Change id "*" is answered as ESX answers it: the areas of the disk that are in use, so a
// backup of a thin disk can skip what was never written. Any other change id must be one this
// server stamped on a disk at a snapshot (changeid.go); the answer is then what changed since
// that state. An id it never gave out faults with InvalidArgument, as ESX does for a change id
// it cannot serve (after a change tracking reset, say).
//
// The areas come from `qemu-img map` of each layer of the chain the snapshot's device points
// at: every range a layer holds itself, less a flat base's holes. Answers are cut into pages
// of at most -cbt-page areas, like ESX's, so clients must follow startOffset + length.
//
// The call is caught in front of vcsim's own /sdk handler, which still checks the session: the
// request's cookie is first replayed on a CurrentTime call, and a refusal is passed through.
package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type cbtRequest struct {
	Body struct {
		Call *struct {
			This        types.ManagedObjectReference  `xml:"_this"`
			Snapshot    *types.ManagedObjectReference `xml:"snapshot"`
			DeviceKey   int32                         `xml:"deviceKey"`
			StartOffset int64                         `xml:"startOffset"`
			ChangeID    string                        `xml:"changeId"`
		} `xml:"QueryChangedDiskAreas"`
	}
}

type area struct{ start, length int64 }

const envelope = `<?xml version="1.0" encoding="UTF-8"?>` +
	`<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ` +
	`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s</soapenv:Body></soapenv:Envelope>`

const currentTime = `<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>`

// withChangedAreas wraps vcsim's handler so /sdk answers QueryChangedDiskAreas.
func withChangedAreas(inner http.Handler, sdkPath string, page int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != sdkPath {
			inner.ServeHTTP(w, r)
			return
		}
		body, err := ioutil.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		stampChangeIDs(body)
		var req cbtRequest
		if !bytes.Contains(body, []byte("QueryChangedDiskAreas")) ||
			xml.Unmarshal(body, &req) != nil || req.Body.Call == nil {
			r.Body = ioutil.NopCloser(bytes.NewReader(body))
			inner.ServeHTTP(w, r)
			return
		}
		probe := r.Clone(r.Context())
		probe.Body = ioutil.NopCloser(strings.NewReader(fmt.Sprintf(envelope, currentTime)))
		probe.ContentLength = -1
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, probe)
		if rec.Code != http.StatusOK {
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		c := req.Body.Call
		info, kind, msg := changedAreas(c.This, c.Snapshot, c.DeviceKey, c.StartOffset, c.ChangeID, page)
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		if kind != "" {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, envelope, fmt.Sprintf(
				`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring>`+
					`<detail><%sFault xmlns="urn:vim25" xsi:type="%s"></%sFault></detail></soapenv:Fault>`,
				xmlEscape(msg), kind, kind, kind))
			return
		}
		var b strings.Builder
		fmt.Fprintf(&b, `<QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval>`+
			`<startOffset>%d</startOffset><length>%d</length>`, info.StartOffset, info.Length)
		for _, a := range info.ChangedArea {
			fmt.Fprintf(&b, `<changedArea><start>%d</start><length>%d</length></changedArea>`, a.Start, a.Length)
		}
		b.WriteString(`</returnval></QueryChangedDiskAreasResponse>`)
		fmt.Fprintf(w, envelope, b.String())
	})
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// changedAreas answers one call, or names the fault type and its message.
func changedAreas(vmRef types.ManagedObjectReference, snap *types.ManagedObjectReference,
	key int32, start int64, changeID string, page int) (*types.DiskChangeInfo, string, string) {
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return nil, "ManagedObjectNotFound", fmt.Sprintf("no virtual machine %s", vmRef.Value)
	}
	var cbt bool
	var devices []types.BaseVirtualDevice
	simulator.Map.WithLock(vm, func() {
		cbt = vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
		devices = vm.Config.Hardware.Device
	})
	if !cbt {
		return nil, "FileFault", "change tracking is not enabled on the virtual machine"
	}
	if snap != nil {
		s, ok := simulator.Map.Get(*snap).(*simulator.VirtualMachineSnapshot)
		if !ok || s.Vm != vmRef {
			return nil, "InvalidArgument", fmt.Sprintf("no snapshot %s of %s", snap.Value, vmRef.Value)
		}
		simulator.Map.WithLock(s, func() { devices = s.Config.Hardware.Device })
	}
	var since *chainState
	if changeID != "*" {
		st, ok := stateOf(changeID)
		if !ok {
			return nil, "InvalidArgument", "change id " + changeID + " is not known"
		}
		since = st
	}
	var disk *types.VirtualDisk
	for _, d := range devices {
		if vd, ok := d.(*types.VirtualDisk); ok && vd.Key == key {
			disk = vd
		}
	}
	if disk == nil {
		return nil, "InvalidArgument", fmt.Sprintf("no virtual disk with device key %d", key)
	}
	capacity := disk.CapacityInBytes
	if capacity == 0 {
		capacity = disk.CapacityInKB * 1024
	}
	if start < 0 || start > capacity {
		return nil, "InvalidArgument", fmt.Sprintf("startOffset %d is outside the %d-byte disk", start, capacity)
	}
	file, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
	if !ok {
		return nil, "InvalidArgument", "the disk has no file backing"
	}
	fb := file.GetVirtualDeviceFileBackingInfo()
	path, err := localPath(fb.FileName, fb.Datastore)
	if err != nil {
		return nil, "FileFault", err.Error()
	}
	now, err := chainOf(vmRef.Value, key, path)
	if err != nil {
		return nil, "FileFault", err.Error()
	}
	var all []area
	if since == nil {
		all, err = inUse(now)
	} else if all, err = changedSince(since, now); err != nil {
		return nil, "InvalidArgument", fmt.Sprintf("change id %s: %v", changeID, err)
	}
	if err != nil {
		return nil, "FileFault", err.Error()
	}
	info := &types.DiskChangeInfo{StartOffset: start, Length: capacity - start}
	for _, a := range all {
		end := a.start + a.length
		if end <= start {
			continue
		}
		if a.start < start {
			a = area{start, end - start}
		}
		if len(info.ChangedArea) == page {
			info.Length = a.start - start
			break
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: a.start, Length: a.length})
	}
	return info, "", ""
}

// localPath turns "[DS] dir/file.vmdk" into the simulated datastore's local file.
func localPath(name string, ds *types.ManagedObjectReference) (string, error) {
	close := strings.Index(name, "]")
	if !strings.HasPrefix(name, "[") || close < 0 || ds == nil {
		return "", fmt.Errorf("disk file %q is not a datastore path", name)
	}
	store, ok := simulator.Map.Get(*ds).(*simulator.Datastore)
	if !ok {
		return "", fmt.Errorf("no datastore %s for %q", ds.Value, name)
	}
	rel := strings.TrimSpace(name[close+1:])
	return filepath.Join(store.Info.GetDatastoreInfo().Url, filepath.FromSlash(rel)), nil
}

// inUse lists the disk's ranges in use, merged and in order: the union over the chain's layers
// of what each layer holds itself, so a flat base's holes are left out.
func inUse(c *chainState) ([]area, error) {
	var all []area
	for _, l := range c.layers {
		a, err := layerAreas(c.dir, l)
		if err != nil {
			return nil, err
		}
		all = append(all, a...)
	}
	return merge(all), nil
}

// layerAreas lists what one layer holds itself. Answers are cached per layer state (size and
// modification time): qemu-img walks a COWD log sector by sector, seconds for a large one,
// where ESX reads its change tracking file.
func layerAreas(dir string, l layer) ([]area, error) {
	k := fmt.Sprintf("%s|%s:%d:%d", dir, l.name, l.size, l.mtime)
	cache.Lock()
	hit, ok := cache.areas[k]
	cache.Unlock()
	if ok {
		return hit, nil
	}
	// The layer alone: without its backing, what it does not hold is "present": false.
	alone := fmt.Sprintf(`json:{"driver":"vmdk","file":{"driver":"file","filename":%q},"backing":null}`, l.name)
	var entries []struct {
		Start   int64 `json:"start"`
		Length  int64 `json:"length"`
		Present bool  `json:"present"`
		Zero    bool  `json:"zero"`
		Data    bool  `json:"data"`
	}
	if err := qemuJSON(dir, &entries, "map", "--output=json", alone); err != nil {
		return nil, err
	}
	var out []area
	for _, e := range entries {
		// "zero" with "data" is a hole in a raw extent: never written.
		if e.Present && !(e.Zero && e.Data) {
			out = append(out, area{e.Start, e.Length})
		}
	}
	cache.Lock()
	cache.areas[k] = out
	cache.Unlock()
	return out, nil
}

// merge sorts areas and joins those that touch or overlap.
func merge(all []area) []area {
	sort.Slice(all, func(i, j int) bool { return all[i].start < all[j].start })
	var merged []area
	for _, a := range all {
		if n := len(merged); n > 0 && merged[n-1].start+merged[n-1].length >= a.start {
			if end := a.start + a.length; end > merged[n-1].start+merged[n-1].length {
				merged[n-1].length = end - merged[n-1].start
			}
			continue
		}
		merged = append(merged, a)
	}
	return merged
}

var cache = struct {
	sync.Mutex
	areas map[string][]area
}{areas: map[string][]area{}}

func qemuJSON(dir string, into interface{}, args ...string) error {
	cmd := exec.Command("qemu-img", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		err = json.Unmarshal(out, into)
	}
	if err != nil {
		return fmt.Errorf("qemu-img %s in %s: %v %s", strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
