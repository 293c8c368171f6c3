#!/usr/bin/env python3
"""A second vSphere client for vdar's tests: pyvmomi, not vdar's own SOAP code.

The tests use it to set the scene (point a VM's disk at a chain uploaded to the simulated
datastore) and to check what vdar did (no snapshot left, a restored VM registered with the
right disks). It reads properties through RetrievePropertiesEx only: vcsim's lazy Fetch
panics on objects that no longer exist.

    client.py URL attach VM DATASTORE_PATH CAPACITY_BYTES   first disk -> that file
    client.py URL show VM                                   one JSON line about the VM
    client.py URL exists VM                                 true or false
    client.py URL folder NAME                               new VM folder in the first
                                                            datacenter; prints its moref
    client.py URL pool CLUSTER NAME                         new resource pool under the
                                                            cluster's root; prints its moref

User and password come from VDAR_VSPHERE_USER / VDAR_VSPHERE_PASSWORD.
"""
import json
import os
import sys
import time
import urllib.parse

from pyVim.connect import SmartConnect, Disconnect
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


def connect(url):
    u = urllib.parse.urlparse(url)
    return SmartConnect(protocol=u.scheme, host=u.hostname, port=u.port,
                        user=os.environ["VDAR_VSPHERE_USER"],
                        pwd=os.environ["VDAR_VSPHERE_PASSWORD"],
                        disableSslCertValidation=True)


def vms(si, paths):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
            PC.TraversalSpec(name="v", path="view", skip=False, type=vim.view.ContainerView)])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name"] + paths)])
    res = content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    out = []
    while res:
        for o in res.objects:
            out.append((o.obj, {p.name: p.val for p in o.propSet}))
        res = res.token and content.propertyCollector.ContinueRetrievePropertiesEx(res.token)
    view.Destroy()
    return out


def find(si, name, paths):
    for obj, props in vms(si, paths):
        if props["name"] == name:
            return obj, props
    sys.exit(f"client.py: no VM named {name!r}")


def wait(si, task):
    pc = si.RetrieveContent().propertyCollector
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=task)],
                         propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error"])])
    for _ in range(600):
        res = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        props = {p.name: p.val for p in res.objects[0].propSet}
        if props["info.state"] == "success":
            return
        if props["info.state"] == "error":
            sys.exit(f"client.py: task failed: {props.get('info.error')}")
        time.sleep(0.05)
    sys.exit("client.py: task did not finish")


def disks(devices):
    return [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]


def attach(si, name, path, capacity):
    vm, props = find(si, name, ["config.hardware.device"])
    disk = disks(props["config.hardware.device"])[0]
    disk.backing.fileName = path
    disk.capacityInBytes = capacity
    disk.capacityInKB = capacity // 1024
    change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
    wait(si, vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))


def change_tracking(si, name, on):
    vm, _ = find(si, name, ["name"])
    wait(si, vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=on)))


def show(si, name):
    vm, props = find(si, name, ["config.hardware.device", "snapshot", "config.files.vmPathName",
                                "parent", "resourcePool"])
    snaps = []
    todo = list(props["snapshot"].rootSnapshotList) if props.get("snapshot") else []
    while todo:
        s = todo.pop()
        snaps.append(s.name)
        todo.extend(s.childSnapshotList)
    print(json.dumps({
        "moref": vm._moId,
        "vmx": props.get("config.files.vmPathName"),
        "folder": props["parent"]._moId if props.get("parent") else None,
        "pool": props["resourcePool"]._moId if props.get("resourcePool") else None,
        "snapshots": snaps,
        "disks": [{"file": d.backing.fileName, "capacity": d.capacityInBytes,
                   "capacity_kb": d.capacityInKB,
                   "controller_key": d.controllerKey, "unit": d.unitNumber,
                   "change_id": getattr(d.backing, "changeId", None)}
                  for d in disks(props["config.hardware.device"])],
    }))


def datacenter(si):
    return next(e for e in si.RetrieveContent().rootFolder.childEntity
                if isinstance(e, vim.Datacenter))


def make_folder(si, name):
    print(datacenter(si).vmFolder.CreateFolder(name)._moId)


def make_pool(si, cluster, name):
    parent = next(c for c in datacenter(si).hostFolder.childEntity if c.name == cluster)
    alloc = lambda: vim.ResourceAllocationInfo(  # noqa: E731
        reservation=0, expandableReservation=True, limit=-1,
        shares=vim.SharesInfo(level="normal", shares=0))
    spec = vim.ResourceConfigSpec(cpuAllocation=alloc(), memoryAllocation=alloc())
    print(parent.resourcePool.CreateResourcePool(name, spec)._moId)


def main():
    url, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    si = connect(url)
    try:
        if cmd == "attach":
            attach(si, args[0], args[1], int(args[2]))
        elif cmd == "cbt":
            change_tracking(si, args[0], args[1] == "on")
        elif cmd == "show":
            show(si, args[0])
        elif cmd == "folder":
            make_folder(si, args[0])
        elif cmd == "pool":
            make_pool(si, args[0], args[1])
        elif cmd == "exists":
            print("true" if any(p["name"] == args[0] for _, p in vms(si, [])) else "false")
        else:
            sys.exit(f"client.py: unknown command {cmd!r}")
    finally:
        Disconnect(si)


if __name__ == "__main__":
    main()
