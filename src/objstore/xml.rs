//! The few XML answers of the S3 API vdar reads: an `<Error>`'s code and message, an upload
//! id, the list of uploads in progress. Parsed with roxmltree (a read-only tree); names are
//! matched by their local part, since S3 puts them in a namespace and some servers do not.

/// The text of the first element named `tag`.
pub(crate) fn text_of(body: &[u8], tag: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let doc = roxmltree::Document::parse(text).ok()?;
    doc.descendants()
        .find(|n| n.tag_name().name() == tag)
        .and_then(|n| n.text())
        .map(str::to_string)
}

/// `(Code, Message)` when `body` is an `<Error>` document.
pub(crate) fn error_of(body: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let doc = roxmltree::Document::parse(text).ok()?;
    let root = doc.root_element();
    if root.tag_name().name() != "Error" {
        return None;
    }
    let child = |name: &str| {
        root.children()
            .find(|n| n.tag_name().name() == name)
            .and_then(|n| n.text())
            .unwrap_or("")
            .to_string()
    };
    Some((child("Code"), child("Message")))
}

/// `(Key, UploadId)` of each `<Upload>` in a ListMultipartUploads answer.
pub(crate) fn uploads_of(body: &[u8]) -> Vec<(String, String)> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let Ok(doc) = roxmltree::Document::parse(text) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.tag_name().name() == "Upload")
        .map(|u| {
            let child = |name: &str| {
                u.children()
                    .find(|n| n.tag_name().name() == name)
                    .and_then(|n| n.text())
                    .unwrap_or("")
                    .to_string()
            };
            (child("Key"), child("UploadId"))
        })
        .collect()
}

/// One page of a ListObjectsV2 answer.
pub(crate) struct ObjectPage {
    /// The objects on it: key and size.
    pub objects: Vec<(String, u64)>,
    /// `NextContinuationToken` when the listing is truncated.
    pub next: Option<String>,
}

/// The objects and continuation token of a ListObjectsV2 answer; `None` when `body` is not
/// one, or an object's size is not a number.
pub(crate) fn objects_of(body: &[u8]) -> Option<ObjectPage> {
    let text = std::str::from_utf8(body).ok()?;
    let doc = roxmltree::Document::parse(text).ok()?;
    let root = doc.root_element();
    if root.tag_name().name() != "ListBucketResult" {
        return None;
    }
    let child = |n: roxmltree::Node, name: &str| {
        n.children()
            .find(|c| c.tag_name().name() == name)
            .map(|c| c.text().unwrap_or("").to_string())
    };
    let mut objects = Vec::new();
    for c in root
        .children()
        .filter(|n| n.tag_name().name() == "Contents")
    {
        objects.push((child(c, "Key")?, child(c, "Size")?.parse().ok()?));
    }
    let truncated = child(root, "IsTruncated").is_some_and(|t| t == "true");
    let next = if truncated {
        Some(child(root, "NextContinuationToken")?)
    } else {
        None
    };
    Some(ObjectPage { objects, next })
}

/// Escapes text for an element's content.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let e = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchBucket</Code><Message>Bucket not found: x</Message></Error>"#;
        assert_eq!(
            error_of(e),
            Some(("NoSuchBucket".into(), "Bucket not found: x".into()))
        );
        let c = br#"<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>abc</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(text_of(c, "UploadId").as_deref(), Some("abc"));
        assert_eq!(error_of(c), None);
        let l = br#"<ListMultipartUploadsResult><Upload><Key>a</Key><UploadId>1</UploadId></Upload><Upload><Key>b</Key><UploadId>2</UploadId></Upload></ListMultipartUploadsResult>"#;
        assert_eq!(
            uploads_of(l),
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(escape("\"a&b\""), "&quot;a&amp;b&quot;");
        let o = br#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Contents><Key>w/a.vdar</Key><Size>120</Size></Contents><Contents><Key>w/b</Key><Size>0</Size></Contents><IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>"#;
        let page = objects_of(o).unwrap();
        assert_eq!(page.objects.len(), 2);
        assert_eq!(page.objects[0], ("w/a.vdar".into(), 120));
        assert_eq!(page.next.as_deref(), Some("t1"));
        let bad = br#"<ListBucketResult><Contents><Key>a</Key><Size>x</Size></Contents></ListBucketResult>"#;
        assert!(objects_of(bad).is_none() && objects_of(e).is_none());
    }
}
