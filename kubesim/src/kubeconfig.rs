//! The user's kubeconfig, as kind keeps it: `kubesim up` merges the cluster, user and
//! context `kubesim-NAME` into the first file of `$KUBECONFIG` (or `~/.kube/config`)
//! and makes it the current context; `kubesim down` takes them out again. Everything
//! else in the file is kept as it is.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_yaml::{Mapping, Value};

/// The file kubectl reads first: `$KUBECONFIG`'s first entry, else `~/.kube/config`.
pub fn user_file() -> Option<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&list).next();
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".kube").join("config"))
}

/// The context name of cluster `name`.
pub fn context(name: &str) -> String {
    format!("kubesim-{name}")
}

const LISTS: [&str; 3] = ["clusters", "users", "contexts"];

fn read(path: &Path) -> anyhow::Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            serde_yaml::from_str(&text).with_context(|| format!("reading {}", path.display()))
        }
        Ok(_) => Ok(empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(empty()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn empty() -> Value {
    serde_yaml::from_str(
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\npreferences: {}\n",
    )
    .unwrap_or(Value::Null)
}

fn write(path: &Path, config: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_yaml::to_string(config)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The entries of `config`'s list `list`, without the one named `name`.
fn without(config: &Value, list: &str, name: &str) -> Vec<Value> {
    config
        .get(list)
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter(|entry| entry.get("name").and_then(Value::as_str) != Some(name))
        .cloned()
        .collect()
}

/// Merges the cluster's own kubeconfig `ours` into `target` as context `kubesim-NAME`
/// and makes it current.
pub fn merge(target: &Path, ours: &Path, name: &str) -> anyhow::Result<()> {
    let ours = read(ours)?;
    let mut config = read(target)?;
    let context = context(name);
    let first = |list: &str, field: &str| -> anyhow::Result<Value> {
        ours.get(list)
            .and_then(Value::as_sequence)
            .and_then(|l| l.first())
            .and_then(|entry| entry.get(field))
            .cloned()
            .with_context(|| format!("the cluster's kubeconfig has no {list}"))
    };
    let entry = |field: &str, body: Value| {
        let mut map = Mapping::new();
        map.insert(Value::from("name"), Value::from(context.clone()));
        map.insert(Value::from(field), body);
        Value::Mapping(map)
    };
    let mut context_body = Mapping::new();
    context_body.insert(Value::from("cluster"), Value::from(context.clone()));
    context_body.insert(Value::from("user"), Value::from(context.clone()));
    let additions = [
        ("clusters", entry("cluster", first("clusters", "cluster")?)),
        ("users", entry("user", first("users", "user")?)),
        ("contexts", entry("context", Value::Mapping(context_body))),
    ];
    let Some(map) = config.as_mapping_mut() else {
        anyhow::bail!("{} is not a kubeconfig", target.display());
    };
    for (list, addition) in additions {
        let mut entries = without(&Value::Mapping(map.clone()), list, &context);
        entries.push(addition);
        map.insert(Value::from(list), Value::Sequence(entries));
    }
    map.insert(Value::from("current-context"), Value::from(context));
    write(target, &config)
}

/// Takes context `kubesim-NAME` (and its cluster and user) out of `target`.
pub fn remove(target: &Path, name: &str) -> anyhow::Result<()> {
    if !target.exists() {
        return Ok(());
    }
    let mut config = read(target)?;
    let context = context(name);
    let Some(map) = config.as_mapping_mut() else {
        return Ok(());
    };
    for list in LISTS {
        let entries = without(&Value::Mapping(map.clone()), list, &context);
        map.insert(Value::from(list), Value::Sequence(entries));
    }
    if map.get("current-context").and_then(Value::as_str) == Some(context.as_str()) {
        map.insert(Value::from("current-context"), Value::from(""));
    }
    write(target, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster: {server: 'https://127.0.0.1:41234', certificate-authority-data: Q0E=}\nusers:\n- name: admin\n  user: {token: secret}\ncontexts:\n- name: kubesim\n  context: {cluster: kubesim, user: admin}\ncurrent-context: kubesim\n";
    const USERS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://prod:6443'}\nusers:\n- name: me\n  user: {token: mine}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\ncurrent-context: prod\n";

    #[test]
    fn up_merges_and_down_removes_only_its_own_context() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ours, target) = (dir.path().join("ours"), dir.path().join("config"));
        std::fs::write(&ours, OURS).expect("write");
        std::fs::write(&target, USERS).expect("write");
        merge(&target, &ours, "demo").expect("merge");
        let merged = read(&target).expect("read");
        assert_eq!(merged["current-context"], Value::from("kubesim-demo"));
        assert_eq!(merged["clusters"].as_sequence().map(Vec::len), Some(2));
        assert_eq!(merged["users"][1]["user"]["token"], Value::from("secret"));
        assert_eq!(
            merged["contexts"][1]["context"]["cluster"],
            Value::from("kubesim-demo")
        );
        merge(&target, &ours, "demo").expect("merge again");
        assert_eq!(
            read(&target).expect("read")["contexts"]
                .as_sequence()
                .map(Vec::len),
            Some(2)
        );
        remove(&target, "demo").expect("remove");
        let back = read(&target).expect("read");
        assert_eq!(back["clusters"], read_str(USERS)["clusters"]);
        assert_eq!(back["users"], read_str(USERS)["users"]);
        assert_eq!(back["current-context"], Value::from(""));
    }

    #[test]
    fn a_missing_file_is_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ours, target) = (dir.path().join("ours"), dir.path().join("new/config"));
        std::fs::write(&ours, OURS).expect("write");
        merge(&target, &ours, "demo").expect("merge");
        assert_eq!(
            read(&target).expect("read")["current-context"],
            Value::from("kubesim-demo")
        );
    }

    fn read_str(text: &str) -> Value {
        serde_yaml::from_str(text).expect("yaml")
    }
}
