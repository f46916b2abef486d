//! Checks JSON against Alertmanager's own OpenAPI (Swagger 2.0) definitions,
//! `tests/data/alertmanager-openapi-v0.35.0.yaml` (from the Go module
//! github.com/prometheus/alertmanager@v0.35.0, Apache 2.0): the field names,
//! types, required fields and enums its clients rely on. Fields the spec does
//! not name are allowed (squadron adds `squad`, `goalkeeper`, ...; Go's
//! decoder ignores them).

use serde_json::Value;

pub struct Spec(Value);

impl Spec {
    pub fn alertmanager() -> Spec {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/alertmanager-openapi-v0.35.0.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        Spec(serde_yaml_ng::from_str(&text).unwrap())
    }

    /// The schema of the answer `status` to `method path` (a path of the
    /// spec, e.g. `/silence/{silenceID}`).
    pub fn response(&self, method: &str, path: &str, status: u16) -> &Value {
        let op = &self.0["paths"][path][method.to_ascii_lowercase()];
        assert!(!op.is_null(), "{method} {path} is not in the spec");
        let r = &op["responses"][status.to_string()];
        assert!(
            !r.is_null(),
            "{method} {path} has no {status} answer in the spec"
        );
        &r["schema"]
    }

    /// Every way `v` departs from `schema`, as JSON paths with the reason.
    pub fn check(&self, schema: &Value, v: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.walk(schema, v, "$", &mut errors);
        errors
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/definitions/").expect("local ref");
                let d = &self.0["definitions"][name];
                assert!(!d.is_null(), "no definition {name}");
                self.resolve(d)
            }
            None => schema,
        }
    }

    fn walk(&self, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.walk(s, v, at, errors);
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(v) {
                errors.push(format!("{at}: {v} is not one of {options:?}"));
            }
        }
        let ty = schema
            .get("type")
            .and_then(Value::as_str)
            .or_else(|| schema.get("properties").map(|_| "object"));
        let Some(ty) = ty else { return };
        let ok = match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            other => panic!("type {other} not handled"),
        };
        if !ok {
            errors.push(format!("{at}: expected {ty}, got {v}"));
            return;
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") {
            let s = v.as_str().unwrap_or_default();
            if s.parse::<jiff::Timestamp>().is_err() {
                errors.push(format!("{at}: {s:?} is not a date-time"));
            }
        }
        match ty {
            "object" => {
                let obj = v.as_object().expect("checked");
                for r in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = r.as_str().unwrap_or_default();
                    if !obj.contains_key(name) {
                        errors.push(format!("{at}: required field {name} is missing"));
                    }
                }
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (name, s) in props {
                        if let Some(field) = obj.get(name) {
                            self.walk(s, field, &format!("{at}.{name}"), errors);
                        }
                    }
                }
                if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    let named = schema.get("properties").and_then(Value::as_object);
                    for (name, field) in obj {
                        if named.is_none_or(|n| !n.contains_key(name)) {
                            self.walk(extra, field, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "array" => {
                if let Some(items) = schema.get("items") {
                    for (i, item) in v.as_array().expect("checked").iter().enumerate() {
                        self.walk(items, item, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            _ => {}
        }
    }
}
