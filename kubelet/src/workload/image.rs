//! Image references as container runtimes read them:
//! `[registry/][path/]name[:tag][@digest]`, with Docker Hub's `library/` implied.

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// The registry host, `None` for Docker Hub (`docker.io` and its aliases).
    pub registry: Option<String>,
    /// The repository path inside the registry, without Docker Hub's `library/`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

impl ImageRef {
    pub(crate) fn parse(image: &str) -> ImageRef {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_string())),
            None => (image, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(colon) => (
                &name[..last_slash + colon],
                Some(name[last_slash + colon + 1..].to_string()),
            ),
            None => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first), rest)
            }
            _ => (None, name),
        };
        let registry = registry.filter(|r| !DOCKER_HUB.contains(r));
        let repository = match registry {
            None => path.strip_prefix("library/").unwrap_or(path),
            Some(_) => path,
        };
        ImageRef {
            registry: registry.map(str::to_string),
            repository: repository.to_string(),
            tag,
            digest,
        }
    }

    /// Whether this is `repository` (its full path) in `registry`, whatever the tag
    /// or digest.
    pub(crate) fn is(&self, registry: &str, repository: &str) -> bool {
        self.registry.as_deref() == Some(registry) && self.repository == repository
    }

    /// The last component of the repository path (`nginx` for `docker.io/library/nginx`).
    pub(crate) fn name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(image: &str, registry: Option<&str>, repository: &str, tag: Option<&str>) {
        let parsed = ImageRef::parse(image);
        assert_eq!(parsed.registry.as_deref(), registry, "{image}");
        assert_eq!(parsed.repository, repository, "{image}");
        assert_eq!(parsed.tag.as_deref(), tag, "{image}");
    }

    #[test]
    fn docker_hub_forms_normalize() {
        check("nginx", None, "nginx", None);
        check("nginx:1.14.2", None, "nginx", Some("1.14.2"));
        check("library/nginx:1.25", None, "nginx", Some("1.25"));
        check("docker.io/library/nginx:1.25", None, "nginx", Some("1.25"));
        check("docker.io/nginx", None, "nginx", None);
        check(
            "index.docker.io/library/busybox:1.36",
            None,
            "busybox",
            Some("1.36"),
        );
        check(
            "curlimages/curl:8.5.0",
            None,
            "curlimages/curl",
            Some("8.5.0"),
        );
    }

    #[test]
    fn registries_ports_and_digests() {
        check(
            "registry.k8s.io/e2e-test-images/agnhost:2.53",
            Some("registry.k8s.io"),
            "e2e-test-images/agnhost",
            Some("2.53"),
        );
        check(
            "localhost:5000/nginx",
            Some("localhost:5000"),
            "nginx",
            None,
        );
        check("localhost/nginx:1", Some("localhost"), "nginx", Some("1"));
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let parsed = ImageRef::parse(&format!("nginx@{digest}"));
        assert_eq!(parsed.repository, "nginx");
        assert_eq!(parsed.tag, None);
        assert_eq!(parsed.digest.as_deref(), Some(digest));
        let parsed = ImageRef::parse(&format!(
            "registry.k8s.io/ingress-nginx/controller:v1.12.1@{digest}"
        ));
        assert!(parsed.is("registry.k8s.io", "ingress-nginx/controller"));
        assert!(!parsed.is("registry.k8s.io", "controller"));
        assert!(!ImageRef::parse("ingress-nginx/controller")
            .is("registry.k8s.io", "ingress-nginx/controller"));
        let parsed = ImageRef::parse(&format!("quay.io:443/org/nginx:1.27.1@{digest}"));
        assert_eq!(parsed.registry.as_deref(), Some("quay.io:443"));
        assert_eq!(parsed.name(), "nginx");
        assert_eq!(parsed.tag.as_deref(), Some("1.27.1"));
        assert_eq!(parsed.digest.as_deref(), Some(digest));
    }
}
