//! Logging in: credentials from the environment or an owner-only file (never from the command
//! line, where `ps` and shell history show them), the service content, and logout.
//!
//! Credentials, first found wins:
//! 1. a file named explicitly (`--credentials FILE`);
//! 2. `VDAR_VSPHERE_USER` and `VDAR_VSPHERE_PASSWORD` in the environment;
//! 3. the file `$VDAR_VSPHERE_CREDENTIALS`. A credentials file holds lines
//!    `user=NAME` and `password=SECRET` (anything after the first `=` is the value; blank lines
//!    and `#` comments ignored). It must be a regular file readable by its owner alone (mode
//!    `0600` or `0400`), like `~/.pgpass` and the Bareos plugin's `vmware_plugin_config`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::props::{service_content, Props, ServiceContent};
use super::soap::{el, Soap};
use crate::error::{Error, Result};

/// A user name and password.
#[derive(Clone)]
pub struct Credentials {
    /// The user (`administrator@vsphere.local`, `root`).
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.user)
    }
}

impl Credentials {
    /// Finds the credentials by the rule above; `file` is `--credentials`.
    pub fn find(file: Option<&Path>) -> Result<Credentials> {
        if let Some(p) = file {
            return Credentials::from_file(p);
        }
        let env = |k| std::env::var(k).ok();
        if let (Some(user), Some(password)) =
            (env("VDAR_VSPHERE_USER"), env("VDAR_VSPHERE_PASSWORD"))
        {
            return Ok(Credentials { user, password });
        }
        match std::env::var_os("VDAR_VSPHERE_CREDENTIALS") {
            Some(p) => Credentials::from_file(Path::new(&p)),
            None => Err(Error::Usage(
                "no vSphere credentials: set VDAR_VSPHERE_USER and VDAR_VSPHERE_PASSWORD, or \
                 give --credentials FILE (user=... and password=... lines, mode 0600)"
                    .into(),
            )),
        }
    }

    /// Reads a credentials file, refusing one that others can read.
    pub fn from_file(path: &Path) -> Result<Credentials> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, None, e))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "{}: a credentials file must be a regular file",
                path.display()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(Error::Usage(format!(
                "{}: mode {:04o} lets others read the password; chmod 600 it",
                path.display(),
                meta.mode() & 0o7777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, None, e))?;
        let (mut user, mut password) = (None, None);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some(("user", v)) => user = Some(v.to_string()),
                Some(("password", v)) => password = Some(v.to_string()),
                _ => {
                    return Err(Error::Syntax {
                        path: path.to_path_buf(),
                        line: i + 1,
                        what: "expected user=NAME or password=SECRET".into(),
                    })
                }
            }
        }
        match (user, password) {
            (Some(user), Some(password)) => Ok(Credentials { user, password }),
            _ => Err(Error::Usage(format!(
                "{}: needs both a user= and a password= line",
                path.display()
            ))),
        }
    }
}

/// A logged-in session: the SOAP client, the service content and a property reader.
pub struct Session {
    /// The client, holding the session cookie.
    pub soap: Soap,
    /// The managers.
    pub content: ServiceContent,
}

impl Session {
    /// Logs in. A wrong password is an error naming the user and the server.
    pub fn login(soap: Soap, creds: &Credentials) -> Result<Session> {
        let content = service_content(&soap)?;
        let args = format!(
            "{}{}",
            el("userName", &creds.user),
            el("password", &creds.password)
        );
        soap.call("Login", &content.session_manager, &args, true)
            .map_err(|e| match e {
                Error::Remote { server, what } if what.contains("InvalidLogin") => Error::Remote {
                    server,
                    what: format!(
                        "login as {:?} refused: wrong user name or password",
                        creds.user
                    ),
                },
                e => e,
            })?;
        Ok(Session { soap, content })
    }

    /// A property reader on this session.
    pub fn props(&self) -> Props<'_> {
        Props::new(&self.soap, &self.content)
    }

    /// Ends the session on the server (best effort: a dead server has ended it already).
    pub fn logout(&self) {
        if let Err(e) = self
            .soap
            .call("Logout", &self.content.session_manager, "", false)
        {
            log::debug!("logout: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_files_must_be_private_and_complete() {
        let dir = std::env::temp_dir().join(format!("vdar-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c");
        std::fs::write(&p, "# vCenter\nuser=backup@vsphere.local\npassword=a=b c\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::from_file(&p).unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("backup@vsphere.local", "a=b c")
        );
        assert!(!format!("{c:?}").contains("a=b"));
        std::fs::write(&p, "user=x\n").unwrap();
        assert!(Credentials::from_file(&p).is_err());
        std::fs::write(&p, "user=x\nsecret\n").unwrap();
        let e = Credentials::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
