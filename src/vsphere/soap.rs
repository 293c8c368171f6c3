//! The vSphere Web Services API (SOAP over HTTP POST to `/sdk`, namespace `urn:vim25`): one
//! session, one call at a time, answers as XML trees.
//!
//! Requests are small templates: a method element holding `_this` (the managed object the
//! method runs on) and its arguments in the order the WSDL lists them, which the server checks.
//! Arguments are escaped here ([`esc`]); nothing from a server is ever pasted into a request
//! unescaped. Answers are parsed with roxmltree and read by local element name, so namespace
//! prefixes (which differ between vCenter, ESXi and vcsim) do not matter.
//!
//! A fault (HTTP 500 with a `Fault` body) becomes [`Error::Remote`] naming the server, the
//! method and the fault type (`InvalidLogin`, `ManagedObjectNotFound`, `InvalidState`...).

use std::sync::Mutex;

use super::http::{agent, classify, with_retries, Failure, RetryPolicy};
use super::tls::TlsTrust;
use crate::error::{Error, Result};

/// Largest SOAP answer read: a property set of a large inventory fits many times over.
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// The session cookie vSphere sets at login and expects on every later request, including the
/// datastore file access.
const SESSION_COOKIE: &str = "vmware_soap_session";

/// A managed object reference: its type and its id (`VirtualMachine`, `vm-42`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MoRef {
    /// The managed object type.
    pub kind: String,
    /// The id, unique per server.
    pub value: String,
}

impl MoRef {
    /// A reference from its parts.
    pub fn new(kind: &str, value: &str) -> MoRef {
        MoRef {
            kind: kind.to_string(),
            value: value.to_string(),
        }
    }

    /// The reference as the element `tag` (`_this`, `obj`, `vm`...).
    pub fn xml(&self, tag: &str) -> String {
        format!(
            "<{tag} type=\"{}\">{}</{tag}>",
            esc(&self.kind),
            esc(&self.value)
        )
    }

    /// Reads a reference element (`type` attribute, id as text).
    pub fn from_node(n: roxmltree::Node<'_, '_>) -> Option<MoRef> {
        // A property value carries `xsi:type="ManagedObjectReference"` beside the plain
        // `type`: only the attribute without a namespace names the object's type.
        let kind = n
            .attributes()
            .find(|a| a.name() == "type" && a.namespace().is_none())?;
        Some(MoRef::new(kind.value(), n.text()?.trim()))
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Escapes text for an XML element or attribute: the OVF writer's rule.
pub fn esc(s: &str) -> String {
    crate::restore::ova::x(s)
}

/// `<tag>text</tag>`, escaped.
pub fn el(tag: &str, text: &str) -> String {
    format!("<{tag}>{}</{tag}>", esc(text))
}

/// The text of an answer; [`Answer::doc`] parses it.
pub struct Answer {
    text: String,
}

impl Answer {
    /// The answer as an XML tree.
    pub fn doc(&self) -> Result<roxmltree::Document<'_>> {
        roxmltree::Document::parse(&self.text)
            .map_err(|e| Error::Usage(format!("vSphere answer is not XML: {e}")))
    }
}

/// The `returnval` elements of a method's `...Response`, in order.
pub fn returnvals<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> Vec<roxmltree::Node<'a, 'i>> {
    doc.descendants()
        .filter(|n| is(n, "returnval"))
        .filter(|n| {
            n.parent()
                .is_some_and(|p| p.tag_name().name().ends_with("Response"))
        })
        .collect()
}

/// Whether `n` is an element with local name `name`.
pub fn is(n: &roxmltree::Node<'_, '_>, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name
}

/// The first child element of `n` named `name`.
pub fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| is(c, name))
}

/// Every child element of `n` named `name`.
pub fn children<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    n.children().filter(move |c| is(c, name))
}

/// The text of the child element `name` of `n`, trimmed.
pub fn text(n: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    child(n, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
}

/// The element's `xsi:type` (the concrete type of a polymorphic value), without a prefix.
pub fn xsi_type<'a>(n: &roxmltree::Node<'a, '_>) -> Option<&'a str> {
    n.attributes()
        .find(|a| a.name() == "type")
        .map(|a| a.value().rsplit(':').next().unwrap_or(a.value()))
}

/// A logged-in session with one vSphere server.
pub struct Soap {
    /// The API endpoint, `https://host/sdk`.
    url: String,
    agent: ureq::Agent,
    cookie: Mutex<Option<String>>,
    retry: RetryPolicy,
}

impl Soap {
    /// A client for the endpoint `url` (no session yet).
    pub fn new(url: &str, trust: TlsTrust, connections: usize, retry: RetryPolicy) -> Soap {
        Soap {
            url: url.to_string(),
            agent: agent(trust, connections),
            cookie: Mutex::new(None),
            retry,
        }
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The shared connection pool (the datastore file access uses it too).
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// The retry rule.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The `Cookie` header value of the session, once logged in.
    pub fn cookie(&self) -> Option<String> {
        self.cookie
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|v| format!("{SESSION_COOKIE}={v}"))
    }

    /// The error for this server.
    pub fn error(&self, what: impl Into<String>) -> Error {
        Error::Remote {
            server: self.url.clone(),
            what: what.into(),
        }
    }

    /// Calls `method` on `this` with the already-serialized `args`. `idempotent` calls are
    /// retried on transient failures; calls that start work are sent once.
    pub fn call(&self, method: &str, this: &MoRef, args: &str, idempotent: bool) -> Result<Answer> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
             <soapenv:Body><{method} xmlns=\"urn:vim25\">{}{args}</{method}>\
             </soapenv:Body></soapenv:Envelope>",
            this.xml("_this")
        );
        let policy = if idempotent {
            self.retry
        } else {
            RetryPolicy {
                attempts: 1,
                ..self.retry
            }
        };
        let (status, text) = with_retries(&policy, || self.post(&body))
            .map_err(|why| self.error(format!("{method}: {why}")))?;
        if let Some(fault) = fault(&text) {
            return Err(self.error(format!("{method} on {this}: {fault}")));
        }
        if status != 200 {
            return Err(self.error(format!("{method}: HTTP {status}")));
        }
        Ok(Answer { text })
    }

    fn post(&self, body: &str) -> std::result::Result<(u16, String), Failure> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "urn:vim25/8.0");
        if let Some(c) = self.cookie() {
            req = req.header("Cookie", &c);
        }
        let mut resp = req.send(body).map_err(classify)?;
        let status = resp.status().as_u16();
        if status == 503 || status == 502 || status == 504 {
            return Err(Failure::Transient(format!("HTTP {status}")));
        }
        if let Some(v) = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session_cookie)
        {
            *self.cookie.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(classify)?;
        Ok((status, text))
    }
}

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const XSD: &str = "http://www.w3.org/2001/XMLSchema";

/// Writes `n` (an element of an answer) as request XML named `tag`: element names in the
/// request's default namespace, `xsi:type` and its value's `xsd:` prefix under the prefixes
/// our envelope declares. A copy of the answer's text would not do: servers declare the
/// prefixes where they please (vcsim on the element itself, under another name), and a
/// fragment cut out of the answer loses them.
pub fn write_element(n: roxmltree::Node<'_, '_>, tag: &str, out: &mut String) {
    out.push('<');
    out.push_str(tag);
    for a in n.attributes() {
        if a.namespace() == Some(XSI) && a.name() == "type" {
            let value = match a.value().split_once(':') {
                Some((prefix, local)) if n.lookup_namespace_uri(Some(prefix)) == Some(XSD) => {
                    format!("xsd:{local}")
                }
                Some((_, local)) => local.to_string(),
                None => a.value().to_string(),
            };
            out.push_str(&format!(" xsi:type=\"{}\"", esc(&value)));
        } else if a.namespace().is_none() {
            out.push_str(&format!(" {}=\"{}\"", a.name(), esc(a.value())));
        }
    }
    out.push('>');
    for c in n.children() {
        if c.is_element() {
            write_element(c, c.tag_name().name(), out);
        } else if let Some(t) = c.text().filter(|_| c.is_text()) {
            out.push_str(&esc(t));
        }
    }
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

/// The session id in a `Set-Cookie` header, if it sets the session cookie.
fn session_cookie(header: &str) -> Option<String> {
    let first = header.split(';').next()?.trim();
    let (name, value) = first.split_once('=')?;
    (name.trim() == SESSION_COOKIE).then(|| value.trim().to_string())
}

/// The fault in an answer, as `Type: message`, if it is one.
fn fault(answer: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(answer).ok()?;
    let f = doc.descendants().find(|n| is(n, "Fault"))?;
    let message = text(f, "faultstring").unwrap_or_default();
    // The detail holds the fault object (`<InvalidLoginFault xsi:type="InvalidLogin">`).
    let kind = child(f, "detail")
        .and_then(|d| d.children().find(|c| c.is_element()))
        .map(|d| {
            xsi_type(&d)
                .unwrap_or(d.tag_name().name().trim_end_matches("Fault"))
                .to_string()
        });
    Some(match kind {
        Some(k) if !message.is_empty() => format!("{k}: {message}"),
        Some(k) => k,
        None => message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_name_their_type_and_message() {
        let t = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Login failure</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        assert_eq!(fault(t).as_deref(), Some("InvalidLogin: Login failure"));
        assert_eq!(fault("<a/>"), None);
    }

    #[test]
    fn elements_are_rewritten_under_our_prefixes() {
        let t = r#"<r xmlns="urn:vim25" xmlns:xs="http://www.w3.org/2001/XMLSchema"><importSpec xmlns:X="http://www.w3.org/2001/XMLSchema-instance" X:type="VirtualMachineImportSpec"><a X:type="xs:string">1 &lt; 2</a><ds type="Datastore">d-1</ds></importSpec></r>"#;
        let doc = roxmltree::Document::parse(t).unwrap();
        let spec = doc.descendants().find(|n| is(n, "importSpec")).unwrap();
        let mut out = String::new();
        write_element(spec, "spec", &mut out);
        assert_eq!(
            out,
            "<spec xsi:type=\"VirtualMachineImportSpec\"><a xsi:type=\"xsd:string\">1 &lt; 2</a>\
             <ds type=\"Datastore\">d-1</ds></spec>"
        );
    }

    #[test]
    fn escaping_and_cookies() {
        assert_eq!(
            el("name", "a<b&\"c'"),
            "<name>a&lt;b&amp;&quot;c&apos;</name>"
        );
        assert_eq!(
            session_cookie("vmware_soap_session=\"52a1\"; Path=/; HttpOnly").as_deref(),
            Some("\"52a1\"")
        );
        assert_eq!(session_cookie("other=1"), None);
    }
}
