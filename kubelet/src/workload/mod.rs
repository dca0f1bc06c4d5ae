//! What a pod's containers run. kubesim pulls no images: [`resolve`] reads a container's
//! image, `command`, `args` and `env` and decides which process the kubelet starts in the
//! pod's namespaces — one of the built-in servers behind `kubesim workload …`, or a host
//! command — or that the container cannot run ([`Unsupported`], reported like an image
//! pull error). [`main`] is the entry point of `kubesim workload`.
//!
//! - `nginx`: the `nginx` image's default site and access log.
//! - `agnhost`: `netexec`, `serve-hostname`, `connect` and `pause` of the Kubernetes e2e
//!   test image.
//! - `expansion`: `$(VAR)` references in `command`, `args` and `env`.
//! - `image`: image references (registry, repository, tag, digest).
//! - `flags`, `http`: Go-style flag parsing and the HTTP/1.1 serving loop.
//!
//! **Invariant:** [`resolve`] is pure: it reads only the container it is given.

mod agnhost;
pub(crate) mod expansion;
mod flags;
mod http;
mod image;
pub mod nginx;

use k8s_openapi::api::core::v1::Container;

use self::image::ImageRef;

/// The images (and the escape hatch) kubesim runs, as [`Unsupported`] lists them.
const SUPPORTED: &str = "nginx*, registry.k8s.io/e2e-test-images/agnhost:*, \
                         registry.k8s.io/coredns/coredns:*, \
                         registry.k8s.io/ingress-nginx/controller:*, busybox*, alpine*, \
                         curlimages/curl*, or any container with command";

/// The registry and repository of ingress-nginx's controller image.
const INGRESS_NGINX: (&str, &str) = ("registry.k8s.io", "ingress-nginx/controller");
/// The controller binary the image's manifests name as their first argument.
const INGRESS_NGINX_BINARY: &str = "/nginx-ingress-controller";

/// The process to start for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// The arguments of `kubesim workload`: `["nginx", "--port", "80", "--version",
    /// "1.14.2"]`, `["agnhost", "netexec", "--http-port=8080"]`.
    Builtin(Vec<String>),
    /// A kubesim component run as the pod's process, the arguments of `kubesim`:
    /// `["dns"]` for the CoreDNS image (the cluster DNS reads its Corefile from the
    /// `coredns` ConfigMap, so CoreDNS's `-conf` argument is not needed);
    /// `["ingress", "--publish-service=…", …]` for ingress-nginx's controller image.
    Component(Vec<String>),
    /// A host command, `command` and `args` composed as a container runtime composes
    /// them with the image's entrypoint.
    Host { argv: Vec<String> },
}

/// A container kubesim cannot run; the message names what it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unsupported {
    pub message: String,
}

/// Decides what `container` runs.
///
/// `command` replaces the image's entrypoint and `args` its default arguments, both after
/// `$(VAR)` expansion from the container's `env`. A container with a `command` runs it
/// on the host, except when the command is agnhost itself. Without one:
///
/// - `nginx` (any registry, tag or digest): the built-in nginx on the first TCP
///   `containerPort` (80 without one), reporting the tag's version (`1.14.2`, `1.25` of
///   `1.25-alpine`) or [`nginx::DEFAULT_VERSION`]; `args` other than `nginx …` run on
///   the host, as the image's entrypoint script would exec them;
/// - `agnhost`: the built-in agnhost with `args`, or `pause` (the image's default);
/// - `busybox`, `alpine`: `args` on the host, or the image's shell (`sh`, `/bin/sh`);
/// - `curl` (`curlimages/curl`): `curl` with `args`, unless the first argument is a
///   command (a path or a bare word such as `sh`), which its entrypoint then runs;
/// - `coredns`: `kubesim dns`;
/// - `registry.k8s.io/ingress-nginx/controller`: `kubesim ingress` with `args`, less
///   the leading `/nginx-ingress-controller` the manifests pass.
pub fn resolve(container: &Container) -> Result<Invocation, Unsupported> {
    resolve_in(container, &expansion::container_env(container))
}

/// [`resolve`] with `$(VAR)` references in `command` and `args` expanded from `env`,
/// the container's whole environment as the kubelet computed it (`valueFrom` and
/// `envFrom` variables included), as `ExpandContainerCommandAndArgs` does.
pub fn resolve_in(
    container: &Container,
    env: &std::collections::HashMap<String, String>,
) -> Result<Invocation, Unsupported> {
    let image_name = container.image.as_deref().unwrap_or_default();
    let image = ImageRef::parse(image_name);
    let expand = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter()
            .flatten()
            .map(|item| expansion::expand(item, env))
            .collect()
    };
    let (command, args) = (expand(&container.command), expand(&container.args));
    match image.name() {
        "nginx" => Ok(nginx(&image, container, command, args)),
        "agnhost" => agnhost(command, args),
        "busybox" => Ok(shell_image(command, args, "sh")),
        "alpine" => Ok(shell_image(command, args, "/bin/sh")),
        "curl" => Ok(curl(command, args)),
        "coredns" if command.is_empty() => Ok(Invocation::Component(vec!["dns".to_owned()])),
        _ if command.is_empty() && image.is(INGRESS_NGINX.0, INGRESS_NGINX.1) => {
            Ok(ingress_controller(args))
        }
        _ if !command.is_empty() => Ok(host(command, args)),
        _ => Err(Unsupported {
            message: format!(
                "image {image_name:?} is not one kubesim can run; supported: {SUPPORTED}"
            ),
        }),
    }
}

fn ingress_controller(args: Vec<String>) -> Invocation {
    let flags = match args.split_first() {
        Some((binary, rest)) if binary == INGRESS_NGINX_BINARY => rest,
        _ => &args[..],
    };
    Invocation::Component(
        std::iter::once("ingress".to_string())
            .chain(flags.iter().cloned())
            .collect(),
    )
}

fn host(command: Vec<String>, args: Vec<String>) -> Invocation {
    Invocation::Host {
        argv: command.into_iter().chain(args).collect(),
    }
}

fn nginx(
    image: &ImageRef,
    container: &Container,
    command: Vec<String>,
    args: Vec<String>,
) -> Invocation {
    if !command.is_empty() {
        return host(command, args);
    }
    if args
        .first()
        .is_some_and(|first| first != "nginx" && first != "nginx-debug")
    {
        return Invocation::Host { argv: args };
    }
    let port = container
        .ports
        .iter()
        .flatten()
        .find(|port| port.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map_or(80, |port| port.container_port);
    Invocation::Builtin(vec![
        "nginx".into(),
        "--port".into(),
        port.to_string(),
        "--version".into(),
        nginx_version(image.tag.as_deref()),
    ])
}

/// The version at the start of an nginx tag (`1.25.3-alpine` is `1.25.3`); tags without
/// one (`latest`, `alpine`, `1`) get [`nginx::DEFAULT_VERSION`].
fn nginx_version(tag: Option<&str>) -> String {
    let tag = tag.unwrap_or_default();
    let end = tag
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(tag.len());
    let version = tag[..end].trim_end_matches('.');
    let numbered = version.split('.').count() >= 2 && version.split('.').all(|p| !p.is_empty());
    if numbered {
        version.to_string()
    } else {
        nginx::DEFAULT_VERSION.to_string()
    }
}

fn agnhost(command: Vec<String>, args: Vec<String>) -> Result<Invocation, Unsupported> {
    let argv: Vec<String> = match command.split_first() {
        None if args.is_empty() => vec!["pause".into()],
        None => args,
        Some((binary, rest))
            if matches!(binary.rsplit('/').next(), Some("agnhost" | "agnhost-2")) =>
        {
            rest.iter().cloned().chain(args).collect()
        }
        Some(_) => return Ok(host(command, args)),
    };
    if let Some(index) = agnhost::subcommand_index(&argv) {
        let subcommand = argv[index].as_str();
        if subcommand != "help" && !agnhost::SUBCOMMANDS.contains(&subcommand) {
            return Err(Unsupported {
                message: format!(
                    "agnhost subcommand {subcommand:?} is not one kubesim can run; supported: {}",
                    agnhost::SUBCOMMANDS.join(", ")
                ),
            });
        }
    }
    Ok(Invocation::Builtin(
        std::iter::once("agnhost".to_string()).chain(argv).collect(),
    ))
}

fn shell_image(command: Vec<String>, args: Vec<String>, shell: &str) -> Invocation {
    match (command.is_empty(), args.is_empty()) {
        (false, _) => host(command, args),
        (true, false) => Invocation::Host { argv: args },
        (true, true) => Invocation::Host {
            argv: vec![shell.to_string()],
        },
    }
}

fn curl(command: Vec<String>, args: Vec<String>) -> Invocation {
    if !command.is_empty() {
        return host(command, args);
    }
    let mut argv = if args.is_empty() {
        vec!["curl".to_string()]
    } else {
        args
    };
    if !looks_like_command(&argv[0]) {
        argv.insert(0, "curl".to_string());
    }
    Invocation::Host { argv }
}

/// Whether curl's entrypoint would find `arg` as a command: an absolute path, or a bare
/// word (no `.`, `:` or `/`); flags, URLs and host names go to curl.
fn looks_like_command(arg: &str) -> bool {
    !arg.is_empty()
        && !arg.starts_with('-')
        && (arg.starts_with('/') || !arg.contains(['.', ':', '/']))
}

/// `kubesim workload nginx|agnhost …`: runs a built-in workload to its end and returns
/// the process's exit code.
pub fn main(argv: Vec<String>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kubesim workload: cannot start the runtime: {err}");
            return 1;
        }
    };
    let code = runtime.block_on(run(&argv));
    runtime.shutdown_background();
    code
}

async fn run(argv: &[String]) -> i32 {
    match argv.split_first() {
        Some((name, rest)) if name == "nginx" => nginx::main(rest).await,
        Some((name, rest)) if name == "agnhost" => agnhost::main(rest).await,
        _ => {
            eprintln!(
                "usage: kubesim workload nginx [--port N] [--version V] | \
                 agnhost <subcommand> [flags]"
            );
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar};

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn container(image: &str, command: &[&str], args: &[&str]) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: (!command.is_empty()).then(|| strings(command)),
            args: (!args.is_empty()).then(|| strings(args)),
            ..Container::default()
        }
    }

    fn builtin(items: &[&str]) -> Result<Invocation, Unsupported> {
        Ok(Invocation::Builtin(strings(items)))
    }

    fn on_host(items: &[&str]) -> Result<Invocation, Unsupported> {
        Ok(Invocation::Host {
            argv: strings(items),
        })
    }

    #[track_caller]
    fn check(
        image: &str,
        command: &[&str],
        args: &[&str],
        expected: Result<Invocation, Unsupported>,
    ) {
        assert_eq!(
            resolve(&container(image, command, args)),
            expected,
            "{image} {command:?} {args:?}"
        );
    }

    #[test]
    fn nginx_image_forms() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let default = nginx::DEFAULT_VERSION;
        for (image, version) in [
            ("nginx", default),
            ("nginx:latest", default),
            ("nginx:alpine", default),
            ("nginx:1", default),
            ("nginx:1.14.2", "1.14.2"),
            ("nginx:1.25-alpine", "1.25"),
            ("nginx:1.27.3-alpine-slim", "1.27.3"),
            ("docker.io/library/nginx:1.25", "1.25"),
            ("docker.io/nginx", default),
            ("mirror.gcr.io/library/nginx:1.26.2", "1.26.2"),
            (&format!("nginx@{digest}"), default),
            (&format!("nginx:1.21.6@{digest}"), "1.21.6"),
        ] {
            check(
                image,
                &[],
                &[],
                builtin(&["nginx", "--port", "80", "--version", version]),
            );
        }
    }

    #[test]
    fn nginx_port_command_and_args() {
        let mut with_ports = container("nginx:1.14.2", &[], &[]);
        with_ports.ports = Some(vec![
            ContainerPort {
                container_port: 53,
                protocol: Some("UDP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                container_port: 8080,
                ..ContainerPort::default()
            },
            ContainerPort {
                container_port: 9090,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]);
        assert_eq!(
            resolve(&with_ports),
            builtin(&["nginx", "--port", "8080", "--version", "1.14.2"])
        );
        check(
            "nginx",
            &["sh", "-c"],
            &["echo hi"],
            on_host(&["sh", "-c", "echo hi"]),
        );
        check(
            "nginx:1.25",
            &[],
            &["nginx", "-g", "daemon off;"],
            builtin(&["nginx", "--port", "80", "--version", "1.25"]),
        );
        check("nginx", &[], &["sleep", "10"], on_host(&["sleep", "10"]));
    }

    #[test]
    fn agnhost_forms() {
        let image = "registry.k8s.io/e2e-test-images/agnhost:2.53";
        check(
            image,
            &[],
            &["netexec", "--http-port=8080", "--udp-port=8081"],
            builtin(&["agnhost", "netexec", "--http-port=8080", "--udp-port=8081"]),
        );
        check(
            image,
            &["/agnhost", "netexec", "--http-port", "80"],
            &[],
            builtin(&["agnhost", "netexec", "--http-port", "80"]),
        );
        check(
            image,
            &["/agnhost"],
            &["serve-hostname", "--port=9376"],
            builtin(&["agnhost", "serve-hostname", "--port=9376"]),
        );
        check(
            "k8s.gcr.io/e2e-test-images/agnhost:2.21",
            &["agnhost-2"],
            &["connect", "svc:80", "--timeout=3s"],
            builtin(&["agnhost", "connect", "svc:80", "--timeout=3s"]),
        );
        // The image's CMD is `pause`; `/agnhost` alone prints its help.
        check(image, &[], &[], builtin(&["agnhost", "pause"]));
        check(image, &["/agnhost"], &[], builtin(&["agnhost"]));
        check(
            image,
            &["/bin/sh", "-c"],
            &["sleep 1"],
            on_host(&["/bin/sh", "-c", "sleep 1"]),
        );
        let unsupported = resolve(&container(image, &[], &["porter"])).unwrap_err();
        assert_eq!(
            unsupported.to_string(),
            "agnhost subcommand \"porter\" is not one kubesim can run; supported: \
             connect, netexec, pause, serve-hostname"
        );
    }

    #[test]
    fn shell_and_curl_images() {
        check("busybox", &[], &[], on_host(&["sh"]));
        check(
            "busybox:1.36",
            &["sleep"],
            &["3600"],
            on_host(&["sleep", "3600"]),
        );
        check(
            "docker.io/library/busybox:1.28",
            &[],
            &["sh", "-c", "echo hi"],
            on_host(&["sh", "-c", "echo hi"]),
        );
        check(
            "registry.k8s.io/e2e-test-images/busybox:1.36.1-1",
            &["wget"],
            &[],
            on_host(&["wget"]),
        );
        check("alpine:3.20", &[], &[], on_host(&["/bin/sh"]));
        check("alpine", &[], &["echo", "x"], on_host(&["echo", "x"]));
        check("curlimages/curl", &[], &[], on_host(&["curl"]));
        check(
            "curlimages/curl:8.5.0",
            &[],
            &["-s", "http://web"],
            on_host(&["curl", "-s", "http://web"]),
        );
        check(
            "curlimages/curl",
            &[],
            &["http://web:8080/"],
            on_host(&["curl", "http://web:8080/"]),
        );
        check(
            "curlimages/curl",
            &[],
            &["web.default.svc"],
            on_host(&["curl", "web.default.svc"]),
        );
        check(
            "curlimages/curl",
            &[],
            &["sh", "-c", "curl web"],
            on_host(&["sh", "-c", "curl web"]),
        );
        check(
            "curlimages/curl",
            &["curl"],
            &["-sS", "web"],
            on_host(&["curl", "-sS", "web"]),
        );
    }

    #[test]
    fn other_images_need_a_command() {
        check(
            "python:3.12",
            &["python3", "-m", "http.server"],
            &[],
            on_host(&["python3", "-m", "http.server"]),
        );
        let err = resolve(&container("foo:1", &[], &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image \"foo:1\" is not one kubesim can run; supported: nginx*, \
             registry.k8s.io/e2e-test-images/agnhost:*, registry.k8s.io/coredns/coredns:*, \
             registry.k8s.io/ingress-nginx/controller:*, busybox*, alpine*, \
             curlimages/curl*, or any container with command"
        );
        assert_eq!(
            resolve(&container(
                "registry.k8s.io/coredns/coredns:v1.11.3",
                &[],
                &["-conf", "/etc/coredns/Corefile"]
            )),
            Ok(Invocation::Component(vec!["dns".to_owned()]))
        );
        assert!(resolve(&container("python:3.12", &[], &["app.py"])).is_err());
    }

    #[test]
    fn ingress_nginx_controller_runs_kubesim_ingress() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let args = [
            "/nginx-ingress-controller",
            "--publish-service=$(POD_NAMESPACE)/ingress-nginx-controller",
            "--election-id=ingress-nginx-leader",
            "--controller-class=k8s.io/ingress-nginx",
            "--ingress-class=nginx",
        ];
        let mut c = container(
            &format!("registry.k8s.io/ingress-nginx/controller:v1.12.1@{digest}"),
            &[],
            &args,
        );
        c.env = Some(vec![EnvVar {
            name: "POD_NAMESPACE".into(),
            value: Some("ingress-nginx".into()),
            ..EnvVar::default()
        }]);
        assert_eq!(
            resolve(&c),
            Ok(Invocation::Component(strings(&[
                "ingress",
                "--publish-service=ingress-nginx/ingress-nginx-controller",
                "--election-id=ingress-nginx-leader",
                "--controller-class=k8s.io/ingress-nginx",
                "--ingress-class=nginx",
            ])))
        );
        for image in [
            "registry.k8s.io/ingress-nginx/controller",
            "registry.k8s.io/ingress-nginx/controller:v1.11.3",
        ] {
            check(
                image,
                &[],
                &["--watch-ingress-without-class=true"],
                Ok(Invocation::Component(strings(&[
                    "ingress",
                    "--watch-ingress-without-class=true",
                ]))),
            );
            check(
                image,
                &[],
                &[],
                Ok(Invocation::Component(strings(&["ingress"]))),
            );
        }
        check(
            "registry.k8s.io/ingress-nginx/controller:v1.12.1",
            &["/bin/sh", "-c"],
            &["true"],
            on_host(&["/bin/sh", "-c", "true"]),
        );
        // Another image whose last path component is `controller` is not ingress-nginx.
        assert!(resolve(&container("example.com/team/controller:1", &[], &[])).is_err());
        assert!(resolve(&container(
            "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.5.2",
            &[],
            &[]
        ))
        .is_err());
    }

    #[test]
    fn command_and_args_expand_env() {
        let mut c = container(
            "busybox",
            &[
                "sh",
                "-c",
                "echo $(GREETING) $$(GREETING) $(MISSING) $$HOME",
            ],
            &["$(NAME)", "$(EMPTY)x"],
        );
        c.env = Some(vec![
            EnvVar {
                name: "NAME".into(),
                value: Some("world".into()),
                ..EnvVar::default()
            },
            EnvVar {
                name: "GREETING".into(),
                value: Some("hello-$(NAME)".into()),
                ..EnvVar::default()
            },
            EnvVar {
                name: "EMPTY".into(),
                ..EnvVar::default()
            },
        ]);
        assert_eq!(
            resolve(&c),
            on_host(&[
                "sh",
                "-c",
                "echo hello-world $(GREETING) $(MISSING) $HOME",
                "world",
                "x"
            ])
        );

        let mut agnhost = container(
            "registry.k8s.io/e2e-test-images/agnhost:2.53",
            &[],
            &["netexec", "--http-port=$(PORT)"],
        );
        agnhost.env = Some(vec![EnvVar {
            name: "PORT".into(),
            value: Some("9000".into()),
            ..EnvVar::default()
        }]);
        assert_eq!(
            resolve(&agnhost),
            builtin(&["agnhost", "netexec", "--http-port=9000"])
        );
    }

    #[test]
    fn main_rejects_unknown_workloads() {
        assert_eq!(main(strings(&["redis"])), 2);
        assert_eq!(main(Vec::new()), 2);
        assert_eq!(main(strings(&["agnhost"])), 0);
    }
}
