// CBT change ids for vcsim, which records no writes.
//
// ESX gives each state of a tracked disk a change id (backing.changeId) and answers
// QueryChangedDiskAreas(snapshot, disk, since) with the areas written between state `since`
// and the snapshot. Here the disk's state is its chain of files: a test changes a disk by
// pointing it at the chain with a new layer on top. When a snapshot is taken of a VM with
// change tracking on, each disk is stamped with the change id of its chain's state (the same
// state keeps its id), and the state is remembered under that id. The areas changed since a
// state are then those of every layer that is not the same file, unchanged, at the same place
// of the old chain: more than was written if a layer grew, never less, as vSphere allows.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/xml"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// layer is one file of a chain as it was: its name in the chain's folder, size and mtime.
type layer struct {
	name  string
	size  int64
	mtime int64
}

// chainState is a disk's chain at one change id: its layers, top first (as qemu-img lists
// them), the disk it belongs to and the folder the layers are in.
type chainState struct {
	vm     string
	key    int32
	dir    string
	layers []layer
}

func (s *chainState) fingerprint() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s|%d|%s|", s.vm, s.key, s.dir)
	for _, l := range s.layers {
		fmt.Fprintf(&b, "%s:%d:%d;", l.name, l.size, l.mtime)
	}
	return b.String()
}

var changeIDs = struct {
	sync.Mutex
	byID    map[string]*chainState
	byState map[string]string
	next    map[string]int
}{byID: map[string]*chainState{}, byState: map[string]string{}, next: map[string]int{}}

// chainOf reads the chain whose top is the local file `path`.
func chainOf(vm string, key int32, path string) (*chainState, error) {
	dir, top := filepath.Dir(path), filepath.Base(path)
	var chain []struct {
		Filename string `json:"filename"`
	}
	if err := qemuJSON(dir, &chain, "info", "--backing-chain", "--output=json", "-f", "vmdk", top); err != nil {
		return nil, err
	}
	s := &chainState{vm: vm, key: key, dir: dir}
	for _, l := range chain {
		st, err := os.Stat(filepath.Join(dir, l.Filename))
		if err != nil {
			return nil, err
		}
		s.layers = append(s.layers, layer{l.Filename, st.Size(), st.ModTime().UnixNano()})
	}
	return s, nil
}

// epoch tells this process's change ids from another's.
var epoch = func() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%x", b)
}()

// idFor names state `s`: the id it had, or a new one ("52 <disk's 8 bytes>/<sequence>", the
// shape of ESX's ids).
func idFor(s *chainState) string {
	changeIDs.Lock()
	defer changeIDs.Unlock()
	fp := s.fingerprint()
	if id, ok := changeIDs.byState[fp]; ok {
		return id
	}
	disk := fmt.Sprintf("%s|%d", s.vm, s.key)
	h := fnv.New64a()
	// ESX's ids start with a UUID the disk's tracking gets when it is switched on: ids of two
	// servers (or of one disk before and after a reset) never match. The process's epoch
	// stands in for it, as vcsim's morefs and UUIDs repeat from one run to the next.
	_, _ = h.Write([]byte(epoch))
	_, _ = h.Write([]byte(disk))
	sum := h.Sum64()
	var uuid bytes.Buffer
	for i := 0; i < 8; i++ {
		fmt.Fprintf(&uuid, " %02x", byte(sum>>(8*i)))
	}
	changeIDs.next[disk]++
	id := fmt.Sprintf("52%s/%d", uuid.String(), changeIDs.next[disk])
	changeIDs.byState[fp] = id
	changeIDs.byID[id] = s
	return id
}

// stateOf is the state change id `id` named, if this server gave it out.
func stateOf(id string) (*chainState, bool) {
	changeIDs.Lock()
	defer changeIDs.Unlock()
	s, ok := changeIDs.byID[id]
	return s, ok
}

type snapshotRequest struct {
	Body struct {
		Call *struct {
			This types.ManagedObjectReference `xml:"_this"`
		} `xml:"CreateSnapshot_Task"`
	}
}

// stampChangeIDs gives each disk of the VM a CreateSnapshot_Task request (`body`) names the
// change id of its chain's state (none without change tracking), before the snapshot copies
// the VM's devices. Any other request is left alone.
func stampChangeIDs(body []byte) {
	var req snapshotRequest
	if !bytes.Contains(body, []byte("CreateSnapshot_Task")) || xml.Unmarshal(body, &req) != nil || req.Body.Call == nil {
		return
	}
	vm, ok := simulator.Map.Get(req.Body.Call.This).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	type disk struct {
		key  int32
		path string
		set  func(string)
	}
	var disks []disk
	simulator.Map.WithLock(vm, func() {
		tracked := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
		for _, d := range vm.Config.Hardware.Device {
			vd, ok := d.(*types.VirtualDisk)
			if !ok {
				continue
			}
			b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				continue
			}
			// An untracked disk has no change id (ESX clears it when tracking is switched off).
			if !tracked {
				b.ChangeId = ""
				continue
			}
			path, err := localPath(b.FileName, b.Datastore)
			if err != nil {
				continue
			}
			disks = append(disks, disk{vd.Key, path, func(id string) { b.ChangeId = id }})
		}
	})
	for _, d := range disks {
		s, err := chainOf(vm.Self.Value, d.key, d.path)
		if err != nil {
			continue
		}
		id := idFor(s)
		simulator.Map.WithLock(vm, func() { d.set(id) })
	}
}

// changedSince lists the areas of the chain `now` that may differ from the state `then` of
// the same disk, merged and in order; an error when `then` is not an older state of it (a
// chain that does not start with the same base).
func changedSince(then, now *chainState) ([]area, error) {
	if then.vm != now.vm || then.key != now.key || then.dir != now.dir {
		return nil, fmt.Errorf("the change id is of another disk")
	}
	old, cur := then.layers, now.layers
	if len(old) == 0 || len(cur) < len(old) || old[len(old)-1].name != cur[len(cur)-1].name {
		return nil, fmt.Errorf("the disk's chain does not build on the change id's")
	}
	var all []area
	for i := range cur {
		// From the bottom: the same file unchanged at the same place holds no change.
		o, c := len(old)-1-i, len(cur)-1-i
		if o >= 0 && old[o] == cur[c] {
			continue
		}
		a, err := layerAreas(now.dir, cur[c])
		if err != nil {
			return nil, err
		}
		all = append(all, a...)
	}
	return merge(all), nil
}
