//! Which browser URLs belong to an app, and how they map onto the guest's paths.
//!
//! The service worker asks [`RouteTable::classify`] about every fetch. A URL
//! is an app URL when its path is `/app/<name>/...` or `/<project>/app/<name>/...`;
//! everything else is left to the network untouched.

use crate::names::{validate_app_name, NameError};

/// What the route table matched, before any app lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `/app/{name}` with nothing after the name.
    Bare,
    /// `/app/{name}/` and anything below it.
    Inside,
}

/// An app URL, split into the pieces the worker and the guest need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUrl {
    /// The project segment of `/<project>/app/<name>/`, if any.
    pub project: Option<String>,
    /// The app name, percent-decoded.
    pub name: String,
    /// The prefix the browser used up to and including the name, e.g. `/p1/app/site`.
    pub prefix: String,
    /// The rest of the path after the prefix, still percent-encoded, starting
    /// with `/` (empty when the URL stopped at the name).
    pub rest: String,
    /// The query string without its `?`, if any.
    pub query: Option<String>,
}

impl AppUrl {
    /// True when the URL stopped at the app name and must be redirected to the
    /// same URL with a trailing slash, so relative links inside the app resolve.
    pub fn needs_slash(&self) -> bool {
        self.rest.is_empty()
    }

    /// The URL the browser should be sent to when [`AppUrl::needs_slash`] holds.
    pub fn slash_location(&self) -> String {
        match &self.query {
            Some(q) => format!("{}/?{}", self.prefix, q),
            None => format!("{}/", self.prefix),
        }
    }

    /// The path and query to request inside the guest, where every app is
    /// served under `/app/<name>/` whatever project prefix the browser used.
    pub fn guest_target(&self) -> String {
        let rest = if self.rest.is_empty() {
            "/"
        } else {
            &self.rest
        };
        match &self.query {
            Some(q) => format!("/app/{}{}?{}", self.name, rest, q),
            None => format!("/app/{}{}", self.name, rest),
        }
    }

    /// Maps a `Location` the guest sent (`/app/<name>/...`, possibly with the
    /// guest's own `http://localhost` origin) back under the prefix the
    /// browser used. Other locations are returned as they are.
    pub fn browser_location(&self, guest_location: &str) -> String {
        let path = guest_location
            .strip_prefix("http://localhost")
            .filter(|p| p.starts_with('/'))
            .unwrap_or(guest_location);
        let guest_prefix = format!("/app/{}", self.name);
        match path.strip_prefix(&guest_prefix) {
            Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => {
                format!("{}{}", self.prefix, rest)
            }
            _ => guest_location.to_owned(),
        }
    }

    /// Checks the decoded name against the app naming rules.
    pub fn validate_name(&self) -> Result<(), NameError> {
        validate_app_name(&self.name)
    }
}

/// The table of URL shapes that belong to apps.
pub struct RouteTable {
    router: matchit::Router<(bool, Shape)>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    /// Builds the table of app URL shapes, with and without a project prefix.
    pub fn new() -> Self {
        let mut router = matchit::Router::new();
        let routes = [
            ("/app/{name}", (false, Shape::Bare)),
            ("/app/{name}/", (false, Shape::Inside)),
            ("/app/{name}/{*rest}", (false, Shape::Inside)),
            ("/{project}/app/{name}", (true, Shape::Bare)),
            ("/{project}/app/{name}/", (true, Shape::Inside)),
            ("/{project}/app/{name}/{*rest}", (true, Shape::Inside)),
        ];
        for (pattern, value) in routes {
            // The patterns are fixed above; a conflict is a bug caught by the tests.
            router
                .insert(pattern, value)
                .expect("app route patterns conflict");
        }
        RouteTable { router }
    }

    /// Returns the app URL for a path with optional query (`/app/site/x?y=1`),
    /// or `None` when the path does not belong to any app.
    pub fn classify(&self, path_and_query: &str) -> Option<AppUrl> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (path_and_query, None),
        };
        let matched = self.router.at(path).ok()?;
        let (has_project, shape) = *matched.value;
        let raw_name = matched.params.get("name")?;
        let name = percent_decode(raw_name)?;
        let project = if has_project {
            Some(matched.params.get("project")?.to_owned())
        } else {
            None
        };
        let prefix = match &project {
            Some(p) => format!("/{p}/app/{raw_name}"),
            None => format!("/app/{raw_name}"),
        };
        let rest = match shape {
            Shape::Bare => String::new(),
            Shape::Inside => path[prefix.len()..].to_owned(),
        };
        Some(AppUrl {
            project,
            name,
            prefix,
            rest,
            query,
        })
    }
}

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is
/// not UTF-8.
pub fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        url: &'static str,
        project: Option<&'static str>,
        name: &'static str,
        rest: &'static str,
        target: &'static str,
    }

    #[test]
    fn app_urls_table() {
        let table = RouteTable::new();
        let cases = [
            Case {
                url: "/app/site/",
                project: None,
                name: "site",
                rest: "/",
                target: "/app/site/",
            },
            Case {
                url: "/app/site/css/main.css",
                project: None,
                name: "site",
                rest: "/css/main.css",
                target: "/app/site/css/main.css",
            },
            Case {
                url: "/p1/app/site/img/logo.png",
                project: Some("p1"),
                name: "site",
                rest: "/img/logo.png",
                target: "/app/site/img/logo.png",
            },
            Case {
                url: "/app/site/a%20b.txt?x=1&y=%2F",
                project: None,
                name: "site",
                rest: "/a%20b.txt",
                target: "/app/site/a%20b.txt?x=1&y=%2F",
            },
            Case {
                url: "/app/s%69te/deep/er/x.js",
                project: None,
                name: "site",
                rest: "/deep/er/x.js",
                target: "/app/site/deep/er/x.js",
            },
            Case {
                url: "/app/site",
                project: None,
                name: "site",
                rest: "",
                target: "/app/site/",
            },
            Case {
                url: "/default/app/site",
                project: Some("default"),
                name: "site",
                rest: "",
                target: "/app/site/",
            },
            // A project may itself be called `app`; the shorter shape wins.
            Case {
                url: "/app/app/x",
                project: None,
                name: "app",
                rest: "/x",
                target: "/app/app/x",
            },
        ];
        for case in cases {
            let got = table
                .classify(case.url)
                .unwrap_or_else(|| panic!("{} not matched", case.url));
            assert_eq!(got.project.as_deref(), case.project, "{}", case.url);
            assert_eq!(got.name, case.name, "{}", case.url);
            assert_eq!(got.rest, case.rest, "{}", case.url);
            assert_eq!(got.guest_target(), case.target, "{}", case.url);
        }
    }

    #[test]
    fn other_urls_are_not_apps() {
        let table = RouteTable::new();
        for url in [
            "/",
            "/index.html",
            "/application-server/",
            "/pkg/sw.js",
            "/app",
            "/app/",
            "/a/b/app/site/",
            "/p1/apps/site/",
            "/images/static/disk.img",
        ] {
            assert_eq!(table.classify(url), None, "{url} should not be an app URL");
        }
    }

    #[test]
    fn bare_name_redirects_with_slash() {
        let table = RouteTable::new();
        let url = table.classify("/p1/app/site?tab=2").unwrap();
        assert!(url.needs_slash());
        assert_eq!(url.slash_location(), "/p1/app/site/?tab=2");
        assert!(!table.classify("/app/site/").unwrap().needs_slash());
    }

    #[test]
    fn guest_redirects_keep_the_browser_prefix() {
        let table = RouteTable::new();
        let url = table.classify("/p1/app/site/css").unwrap();
        let cases = [
            ("/app/site/css/", "/p1/app/site/css/"),
            ("http://localhost/app/site/css/", "/p1/app/site/css/"),
            ("/app/site?x=1", "/p1/app/site?x=1"),
            ("/app/sites/x", "/app/sites/x"),
            (
                "https://example.com/app/site/",
                "https://example.com/app/site/",
            ),
            ("other/relative", "other/relative"),
        ];
        for (guest, want) in cases {
            assert_eq!(url.browser_location(guest), want, "{guest}");
        }
    }

    #[test]
    fn encoded_names_are_decoded_then_validated() {
        let table = RouteTable::new();
        let dotdot = table.classify("/app/%2e%2e/etc").unwrap();
        assert_eq!(dotdot.name, "..");
        assert!(dotdot.validate_name().is_err());
        assert_eq!(
            table.classify("/app/%zz/"),
            None,
            "malformed escape is not an app"
        );
        assert_eq!(percent_decode("a%2Fb"), Some("a/b".into()));
    }
}
