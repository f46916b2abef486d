//! `squadron goalkeeper` and `squadron ack`: the runtime controls where
//! amtool does not reach. `goalkeeper` answers from the rule files alone, or
//! from a running squadron (`--url`, which adds duty overrides made through
//! its API); `ack` talks to a running squadron.
//!
//! Credentials come from the environment, never arguments (they would show in
//! `ps` and shell history): `SQUADRON_USER` and `SQUADRON_PASSWORD` (basic
//! auth), or `SQUADRON_TOKEN` (bearer).

use crate::sinks::receivers::url_escape;
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct GoalkeeperArgs {
    /// The rules directory (ignored with --url).
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// Only this squad.
    #[arg(long)]
    pub squad: Option<String>,
    /// The moment to ask about (RFC 3339). Default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// Also list the shifts of the coming N days (handover to handover).
    #[arg(long, default_value_t = 0)]
    pub days: u32,
    /// Ask a running squadron (includes duty overrides made through its API).
    #[arg(long, env = "SQUADRON_URL")]
    pub url: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Put PERSON on duty for --squad from --from (default now) until
    /// --until, on the running squadron at --url (a swap, a sick day).
    #[arg(long = "override", value_name = "PERSON", requires_all = ["url", "squad", "until"])]
    pub set_override: Option<String>,
    /// When the override starts (RFC 3339). Default: now.
    #[arg(long, requires = "set_override")]
    pub from: Option<String>,
    /// When the override ends (RFC 3339).
    #[arg(long, requires = "set_override")]
    pub until: Option<String>,
    /// Who makes the override. Default: $USER.
    #[arg(long, requires = "set_override")]
    pub by: Option<String>,
    #[arg(long, default_value = "", requires = "set_override")]
    pub comment: String,
    /// Remove the override with this id (as `--json` lists it) from --url.
    #[arg(
        long,
        value_name = "ID",
        requires = "url",
        conflicts_with = "set_override"
    )]
    pub remove_override: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct AckArgs {
    /// The group to acknowledge: its `groupKey` as `/api/v2/alerts` shows it
    /// (`payments:{alertname="HighErrorRate"}`) or as its notification does
    /// (`{}/{squad="payments"}:{alertname="HighErrorRate"}`).
    pub group_key: Option<String>,
    /// The squadron to talk to.
    #[arg(long, env = "SQUADRON_URL", default_value = "http://127.0.0.1:9464")]
    pub url: String,
    /// Who acknowledges. Default: $USER.
    #[arg(long)]
    pub by: Option<String>,
    #[arg(long, default_value = "")]
    pub comment: String,
    /// List the acknowledgements in force instead.
    #[arg(long, conflicts_with = "group_key")]
    pub list: bool,
    /// Remove the acknowledgement of GROUP_KEY (repeats resume).
    #[arg(long, requires = "group_key")]
    pub remove: bool,
}

pub fn goalkeeper(args: &GoalkeeperArgs) -> anyhow::Result<i32> {
    let at = match &args.at {
        Some(s) => super::parse_time_arg(s)?,
        None => super::wall_clock(),
    };
    anyhow::ensure!(args.days <= 366, "--days: at most 366");
    if let (Some(id), Some(url)) = (&args.remove_override, &args.url) {
        request(
            reqwest::Method::DELETE,
            url,
            &format!("/api/v1/overrides/{}", url_escape(id)),
            None,
        )?;
        println!("override {id} removed");
        return Ok(0);
    }
    if let (Some(person), Some(url), Some(squad), Some(until)) =
        (&args.set_override, &args.url, &args.squad, &args.until)
    {
        let from = match &args.from {
            Some(s) => super::parse_time_arg(s)?,
            None => super::wall_clock(),
        };
        let until = super::parse_time_arg(until)?;
        let by = args
            .by
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--by: who makes the override ($USER is not set)"))?;
        let body = serde_json::json!({
            "squad": squad, "person": person, "startsAt": from, "endsAt": until,
            "createdBy": by, "comment": args.comment,
        });
        let v = request(reqwest::Method::POST, url, "/api/v1/overrides", Some(body))?;
        println!(
            "{person} is on duty for {squad} from {from} until {until} (override {})",
            v["id"].as_str().unwrap_or("")
        );
        return Ok(0);
    }
    let answer: Vec<Value> = match &args.url {
        Some(url) => {
            let mut q = format!("at={}&days={}", url_escape(&at.to_string()), args.days);
            if let Some(s) = &args.squad {
                q.push_str(&format!("&squad={}", url_escape(s)));
            }
            let v = request(
                reqwest::Method::GET,
                url,
                &format!("/api/v1/goalkeepers?{q}"),
                None,
            )?;
            serde_json::from_value(v)?
        }
        None => {
            let rules = super::run::load_rules(&args.rules)?;
            if let Some(s) = &args.squad {
                anyhow::ensure!(
                    rules.squad_by_name(s).is_some(),
                    "no squad {s:?} in {}",
                    args.rules.display()
                );
            }
            crate::telemetry::controls_api::goalkeepers(
                &rules,
                &crate::control::Controls::default(),
                args.squad.as_deref(),
                at,
                args.days,
            )
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(0);
    }
    let person = |v: &Value| v.as_str().unwrap_or("(nobody)").to_owned();
    println!("on duty at {at}:");
    for s in &answer {
        println!(
            "  {:<16} {:<16} ({})",
            s["squad"].as_str().unwrap_or(""),
            person(&s["goalkeeper"]),
            s["source"].as_str().unwrap_or("")
        );
    }
    for s in answer
        .iter()
        .filter(|s| s["shifts"].as_array().is_some_and(|a| !a.is_empty()))
    {
        println!("\n{}: shifts", s["squad"].as_str().unwrap_or(""));
        for sh in s["shifts"].as_array().into_iter().flatten() {
            println!(
                "  {}  ->  {}  {:<16} ({})",
                sh["start"].as_str().unwrap_or(""),
                sh["end"].as_str().unwrap_or(""),
                person(&sh["goalkeeper"]),
                sh["source"].as_str().unwrap_or("")
            );
        }
    }
    Ok(0)
}

pub fn ack(args: &AckArgs) -> anyhow::Result<i32> {
    if args.list {
        let v = request(reqwest::Method::GET, &args.url, "/api/v1/acks", None)?;
        for a in v.as_array().into_iter().flatten() {
            println!(
                "{}  by {} at {}{}",
                a["groupKey"].as_str().unwrap_or(""),
                a["by"].as_str().unwrap_or(""),
                a["at"].as_str().unwrap_or(""),
                match a["comment"].as_str() {
                    Some(c) if !c.is_empty() => format!(": {c}"),
                    _ => String::new(),
                }
            );
        }
        return Ok(0);
    }
    let Some(group) = &args.group_key else {
        anyhow::bail!("give the group key to acknowledge, or --list");
    };
    if args.remove {
        request(
            reqwest::Method::DELETE,
            &args.url,
            &format!("/api/v1/acks?groupKey={}", url_escape(group)),
            None,
        )?;
        println!("acknowledgement removed: {group}");
        return Ok(0);
    }
    let by = match &args.by {
        Some(b) => b.clone(),
        None => std::env::var("USER").unwrap_or_default(),
    };
    anyhow::ensure!(!by.is_empty(), "--by: who acknowledges ($USER is not set)");
    let body = serde_json::json!({"groupKey": group, "by": by, "comment": args.comment});
    let v = request(reqwest::Method::POST, &args.url, "/api/v1/acks", Some(body))?;
    println!(
        "acknowledged {group} as {} at {}: repeats stop until the group changes",
        v["by"].as_str().unwrap_or(""),
        v["at"].as_str().unwrap_or("")
    );
    Ok(0)
}

/// One request to a running squadron, with credentials from the environment.
fn request(
    method: reqwest::Method,
    url: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let full = format!("{}{path}", url.trim_end_matches('/'));
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let mut req = client.request(method, &full);
        if let Ok(token) = std::env::var("SQUADRON_TOKEN") {
            req = req.bearer_auth(token);
        } else if let Ok(user) = std::env::var("SQUADRON_USER") {
            req = req.basic_auth(user, std::env::var("SQUADRON_PASSWORD").ok());
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&b)?);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {full}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success(),
            "{full}: {status}: {}",
            text.trim().trim_matches('"')
        );
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    })
}
