//! Static assets embedded in the binary: the UI works with no internet and no
//! build step at run time.

/// One embedded file: its bytes and content type.
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

/// The asset served at `static/{name}`, if there is one.
pub fn get(name: &str) -> Option<Asset> {
    let (body, content_type): (&'static [u8], _) = match name {
        "app.css" => (include_bytes!("../static/app.css"), "text/css; charset=utf-8"),
        "app.js" => (include_bytes!("../static/app.js"), "text/javascript; charset=utf-8"),
        "favicon.svg" => (include_bytes!("../static/favicon.svg"), "image/svg+xml"),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_linked_asset_is_embedded() {
        for name in ["app.css", "app.js", "favicon.svg"] {
            let a = super::get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(!a.body.is_empty());
        }
        assert!(super::get("../Cargo.toml").is_none());
    }
}
