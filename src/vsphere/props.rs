//! The service content (the managers every call starts from), and reading managed objects'
//! properties through the property collector
//! (`RetrievePropertiesEx`, paged with `ContinueRetrievePropertiesEx`), container views over the
//! inventory, inventory-path lookup, and waiting for tasks.
//!
//! Properties are always read through the collector, never by fetching an object directly: a
//! collector answer for an object that has gone away is a clean `ManagedObjectNotFound`, where
//! some servers (vcsim's lazy `Fetch`) fail the whole request.

use std::time::{Duration, Instant};

use super::soap::{child, children, el, is, returnvals, text, xsi_type, MoRef, Soap};
use crate::error::Result;

/// Longest a task is waited for: a quiesced snapshot of a busy VM can take many minutes.
const MAX_TASK_WAIT: Duration = Duration::from_secs(3 * 3600);

/// What the server's `ServiceInstance` names: the managers vdar calls.
#[derive(Clone, Debug)]
pub struct ServiceContent {
    /// The inventory's root folder.
    pub root_folder: MoRef,
    /// The property collector.
    pub property_collector: MoRef,
    /// The view manager (container views over the inventory).
    pub view_manager: MoRef,
    /// The search index (inventory paths).
    pub search_index: MoRef,
    /// The session manager.
    pub session_manager: MoRef,
    /// The file manager (deleting datastore files), when the server has one.
    pub file_manager: Option<MoRef>,
    /// The OVF manager (import specs for NFC restores), when the server has one.
    pub ovf_manager: Option<MoRef>,
    /// `about.fullName`, for messages and the manifest.
    pub about: String,
    /// `about.apiType`: `VirtualCenter` or `HostAgent` (a standalone ESXi).
    pub api_type: String,
}

/// Reads the service content (no session needed).
pub fn service_content(soap: &Soap) -> Result<ServiceContent> {
    let si = MoRef::new("ServiceInstance", "ServiceInstance");
    let answer = soap.call("RetrieveServiceContent", &si, "", true)?;
    let doc = answer.doc()?;
    let rv = super::soap::returnvals(&doc)
        .into_iter()
        .next()
        .ok_or_else(|| soap.error("RetrieveServiceContent: empty answer"))?;
    let moref = |name: &str| {
        super::soap::child(rv, name)
            .and_then(MoRef::from_node)
            .ok_or_else(|| soap.error(format!("service content has no {name}")))
    };
    let about = super::soap::child(rv, "about");
    Ok(ServiceContent {
        root_folder: moref("rootFolder")?,
        property_collector: moref("propertyCollector")?,
        view_manager: moref("viewManager")?,
        search_index: moref("searchIndex")?,
        session_manager: moref("sessionManager")?,
        file_manager: moref("fileManager").ok(),
        ovf_manager: moref("ovfManager").ok(),
        about: about
            .and_then(|a| super::soap::text(a, "fullName"))
            .unwrap_or_default(),
        api_type: about
            .and_then(|a| super::soap::text(a, "apiType"))
            .unwrap_or_default(),
    })
}

/// Objects to read: some named ones, or everything of their type a container view shows.
pub enum Objects<'a> {
    /// These objects.
    List(&'a [MoRef]),
    /// Everything in this `ContainerView`.
    View(&'a MoRef),
}

/// A property reader.
pub struct Props<'s> {
    soap: &'s Soap,
    content: &'s ServiceContent,
}

impl<'s> Props<'s> {
    /// A reader on a logged-in session.
    pub fn new(soap: &'s Soap, content: &'s ServiceContent) -> Props<'s> {
        Props { soap, content }
    }

    /// The session's client.
    pub fn soap(&self) -> &'s Soap {
        self.soap
    }

    /// Reads `paths` of every object of `kind` in `objects`, calling `each(object, path,
    /// value)` for every property the server returns (a property that is unset is left out).
    pub fn retrieve(
        &self,
        kind: &str,
        paths: &[&str],
        objects: Objects<'_>,
        mut each: impl FnMut(&MoRef, &str, roxmltree::Node<'_, '_>),
    ) -> Result<()> {
        let prop_set = format!(
            "<propSet>{}{}</propSet>",
            el("type", kind),
            paths.iter().map(|p| el("pathSet", p)).collect::<String>()
        );
        let object_set = match objects {
            Objects::List(list) => list
                .iter()
                .map(|o| format!("<objectSet>{}<skip>false</skip></objectSet>", o.xml("obj")))
                .collect::<String>(),
            Objects::View(view) => format!(
                "<objectSet>{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\">\
                 <name>view</name><type>ContainerView</type><path>view</path>\
                 <skip>false</skip></selectSet></objectSet>",
                view.xml("obj")
            ),
        };
        let pc = &self.content.property_collector;
        let args = format!("<specSet>{prop_set}{object_set}</specSet><options></options>");
        let mut answer = self.soap.call("RetrievePropertiesEx", pc, &args, true)?;
        loop {
            let doc = answer.doc()?;
            let mut token = None;
            for rv in returnvals(&doc) {
                token = text(rv, "token");
                for oc in children(rv, "objects") {
                    let Some(obj) = child(oc, "obj").and_then(MoRef::from_node) else {
                        continue;
                    };
                    for ps in children(oc, "propSet") {
                        if let (Some(name), Some(val)) = (text(ps, "name"), child(ps, "val")) {
                            each(&obj, &name, val);
                        }
                    }
                }
            }
            let Some(token) = token else { return Ok(()) };
            drop(doc);
            answer = self.soap.call(
                "ContinueRetrievePropertiesEx",
                pc,
                &el("token", &token),
                true,
            )?;
        }
    }

    /// One property of one object, as the value `read` makes of it (None when unset).
    pub fn get<T>(
        &self,
        obj: &MoRef,
        path: &str,
        read: impl Fn(roxmltree::Node<'_, '_>) -> Option<T>,
    ) -> Result<Option<T>> {
        let mut out = None;
        self.retrieve(
            &obj.kind,
            &[path],
            Objects::List(std::slice::from_ref(obj)),
            |_, p, v| {
                if p == path {
                    out = read(v);
                }
            },
        )?;
        Ok(out)
    }

    /// A container view of every object of `kind` below the root folder. Destroy it with
    /// [`Props::destroy_view`] when done (views live as long as the session otherwise).
    pub fn view(&self, kind: &str) -> Result<MoRef> {
        let args = format!(
            "{}{}<recursive>true</recursive>",
            self.content.root_folder.xml("container"),
            el("type", kind)
        );
        let answer = self.soap.call(
            "CreateContainerView",
            &self.content.view_manager,
            &args,
            false,
        )?;
        let doc = answer.doc()?;
        returnvals(&doc)
            .into_iter()
            .find_map(MoRef::from_node)
            .ok_or_else(|| self.soap.error("CreateContainerView: no view returned"))
    }

    /// Destroys a view (best effort).
    pub fn destroy_view(&self, view: &MoRef) {
        if let Err(e) = self.soap.call("DestroyView", view, "", false) {
            log::debug!("DestroyView: {e}");
        }
    }

    /// The object at an inventory path (`DC0/vm/web01`), if any.
    pub fn find_by_inventory_path(&self, path: &str) -> Result<Option<MoRef>> {
        let answer = self.soap.call(
            "FindByInventoryPath",
            &self.content.search_index,
            &el("inventoryPath", path),
            true,
        )?;
        let doc = answer.doc()?;
        Ok(returnvals(&doc).into_iter().find_map(MoRef::from_node))
    }

    /// Waits for `task` to end; its result (a managed object, for tasks that make one) on
    /// success, else an error naming `what` and the fault the task reports.
    pub fn wait_task(&self, task: &MoRef, what: &str) -> Result<Option<MoRef>> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let mut state = String::new();
            let mut result = None;
            let mut error = None;
            self.retrieve(
                "Task",
                &["info.state", "info.result", "info.error"],
                Objects::List(std::slice::from_ref(task)),
                |_, path, val| match path {
                    "info.state" => state = val.text().unwrap_or("").trim().to_string(),
                    "info.result" => result = MoRef::from_node(val),
                    "info.error" => error = Some(fault_text(val)),
                    _ => {}
                },
            )?;
            match state.as_str() {
                "success" => return Ok(result),
                "error" => {
                    return Err(self.soap.error(format!(
                        "{what}: {}",
                        error.unwrap_or_else(|| "the task failed without a reason".into())
                    )))
                }
                _ => {}
            }
            if started.elapsed() > MAX_TASK_WAIT {
                return Err(self.soap.error(format!(
                    "{what}: task {} still {state} after {:?}",
                    task.value, MAX_TASK_WAIT
                )));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

/// A `LocalizedMethodFault` (a task's error, an import spec's) as `Type: message`.
pub fn fault_text(val: roxmltree::Node<'_, '_>) -> String {
    let kind = child(val, "fault")
        .and_then(|f| xsi_type(&f).map(str::to_string))
        .unwrap_or_else(|| "fault".into());
    match text(val, "localizedMessage").filter(|m| !m.is_empty()) {
        Some(m) => format!("{kind}: {m}"),
        None => kind,
    }
}

/// Every `ManagedObjectReference` inside `val` (an `ArrayOfManagedObjectReference`).
pub fn morefs(val: roxmltree::Node<'_, '_>) -> Vec<MoRef> {
    val.children()
        .filter(|c| is(c, "ManagedObjectReference"))
        .filter_map(MoRef::from_node)
        .collect()
}

/// The value's text, trimmed.
pub fn string(val: roxmltree::Node<'_, '_>) -> Option<String> {
    val.text().map(|t| t.trim().to_string())
}
