//! JSON values printed the way Go's `fmt` prints the decoded `interface{}` values, so
//! that error messages quoting a map or a list read exactly as the apiserver's
//! (`map[image:nginx ports:[map[containerPort:80]]]`).

use serde_json::{Number, Value};

/// `%v` of a decoded JSON value: maps with sorted keys, lists space separated, strings
/// bare, `null` as `<nil>`.
pub(crate) fn go_v(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_v).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let entries: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_v(v)))
                .collect();
            format!("map[{}]", entries.join(" "))
        }
    }
}

/// `%s` of a decoded JSON value: strings bare, anything else as Go's `%!s(type=value)`.
pub(crate) fn go_s(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "%!s(<nil>)".to_string(),
        Value::Bool(_) | Value::Number(_) => format!("%!s({}={})", go_type(value), go_v(value)),
        Value::Array(_) | Value::Object(_) => go_v(value),
    }
}

/// The Go type a JSON value decodes to (`reflect.TypeOf(v)` printed with `%s`).
pub(crate) fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "%!s(<nil>)",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Integers print as integers; other numbers as Go's shortest `%g` (exponent form from
/// 1e+06 on and below 1e-04).
fn go_number(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => go_float(f),
        _ => n.to_string(),
    }
}

fn go_float(f: f64) -> String {
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return sci;
    };
    if (-4..6).contains(&exp) {
        return f.to_string();
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: Value, v: &str, s: &str, ty: &str) {
        assert_eq!(go_v(&value), v, "%v of {value}");
        assert_eq!(go_s(&value), s, "%s of {value}");
        assert_eq!(go_type(&value), ty, "type of {value}");
    }

    #[test]
    fn prints_like_go_fmt() {
        check(json!(null), "<nil>", "%!s(<nil>)", "%!s(<nil>)");
        check(json!(true), "true", "%!s(bool=true)", "bool");
        check(json!(80), "80", "%!s(int64=80)", "int64");
        check(json!(0.5), "0.5", "%!s(float64=0.5)", "float64");
        check(json!(1.0e6), "1e+06", "%!s(float64=1e+06)", "float64");
        check(json!(0.00001), "1e-05", "%!s(float64=1e-05)", "float64");
        check(
            json!(123456.5),
            "123456.5",
            "%!s(float64=123456.5)",
            "float64",
        );
        check(json!("nginx"), "nginx", "nginx", "string");
        check(json!([1, "a"]), "[1 a]", "[1 a]", "[]interface {}");
        check(
            json!({"ports": [{"containerPort": 80}], "image": "nginx"}),
            "map[image:nginx ports:[map[containerPort:80]]]",
            "map[image:nginx ports:[map[containerPort:80]]]",
            "map[string]interface {}",
        );
    }
}
