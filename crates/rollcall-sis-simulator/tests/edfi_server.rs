//! The Ed-Fi server through a real HTTP client against `serve` on 127.0.0.1:0.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use reqwest::{Client, StatusCode};
use rollcall_sis_simulator::edfi::{EdfiServer, Faults, ServerOptions, SimHandle};
use rollcall_sis_simulator::model::Resource;
use rollcall_sis_simulator::*;
use serde_json::Value;

struct Host {
    base: String,
    handle: SimHandle,
    world: Arc<World>,
    http: Client,
}

async fn start(opts: ServerOptions) -> Host {
    let world = Arc::new(generate(&SimConfig::small(11)).unwrap());
    start_with(world, opts).await
}

async fn start_with(world: Arc<World>, opts: ServerOptions) -> Host {
    let server = EdfiServer::new(world.clone(), opts);
    let handle = server.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener));
    Host {
        base,
        handle,
        world,
        http: Client::new(),
    }
}

impl Host {
    async fn token_with(&self, id: &str, secret: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/oauth/token", self.base))
            .basic_auth(id, Some(secret))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap()
    }

    async fn token(&self) -> String {
        let r = self.token_with("rollcall", "rollcall-secret").await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["token_type"], "bearer");
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, token: &str, path: &str) -> (Value, reqwest::header::HeaderMap) {
        let r = self.get(token, path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        (r.json().await.unwrap(), h)
    }

    async fn newest(&self, token: &str) -> u64 {
        let (v, _) = self
            .get_json(token, "/changeQueries/v1/availableChangeVersions")
            .await;
        assert_eq!(v["oldestChangeVersion"], 0);
        v["newestChangeVersion"].as_u64().unwrap()
    }

    /// Every row of a collection window by offset/limit.
    async fn page_all(&self, token: &str, path: &str, min: u64, max: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let (v, _) = self
                .get_json(
                    token,
                    &format!("/data/v3/ed-fi/{path}?minChangeVersion={min}&maxChangeVersion={max}&offset={offset}&limit=500"),
                )
                .await;
            let rows = v.as_array().unwrap().clone();
            if rows.is_empty() {
                return out;
            }
            offset += rows.len();
            out.extend(rows);
        }
    }
}

fn edfi_district_attendance_count(world: &World, day: chrono::NaiveDate) -> usize {
    world
        .visible_through(day)
        .current()
        .filter(|(_, _, r, _)| {
            r.resource == Resource::StudentSchoolAttendanceEvents
                && world.districts[r.district as usize].spec.feed == Feed::Edfi
        })
        .count()
}

#[tokio::test]
async fn oauth_tokens_discovery_and_401s() {
    let host = start(ServerOptions::default()).await;
    let r = host.token_with("rollcall", "wrong").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let token = host.token().await;
    // Client id and secret in the form body work too.
    let r = host
        .http
        .post(format!("{}/oauth/token", host.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=rollcall&client_secret=rollcall-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_in"], 1800);

    let no_token = host
        .http
        .get(format!("{}/data/v3/ed-fi/calendarDates", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        host.get("bogus", "/data/v3/ed-fi/calendarDates")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        host.get(&token, "/data/v3/ed-fi/calendarDates")
            .await
            .status(),
        StatusCode::OK
    );

    let doc: Value = host
        .http
        .get(&host.base)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["urls"]["oauth"], format!("{}/oauth/token", host.base));
    assert_eq!(
        doc["urls"]["dataManagementApi"],
        format!("{}/data/v3", host.base)
    );
    assert_eq!(
        doc["urls"]["changeQueries"],
        format!("{}/changeQueries/v1", host.base)
    );

    // Forced expiry: every token stops working, a new one works.
    let r = host
        .http
        .post(format!("{}/_sim/expire-tokens", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        host.get(&token, "/data/v3/ed-fi/calendarDates")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = host.token().await;
    assert_eq!(
        host.get(&fresh, "/data/v3/ed-fi/calendarDates")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn short_lived_tokens_expire() {
    let host = start(ServerOptions {
        token_ttl_secs: 1,
        ..ServerOptions::default()
    })
    .await;
    let token = host.token().await;
    assert_eq!(
        host.get(&token, "/data/v3/ed-fi/calendarDates")
            .await
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = host.get(&token, "/data/v3/ed-fi/calendarDates").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn clock_control_and_change_versions() {
    let host = start(ServerOptions::default()).await;
    let token = host.token().await;
    let state: Value = host
        .http
        .get(format!("{}/_sim/state", host.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["day"], host.world.first_day.to_string());
    let n0 = host.newest(&token).await;
    assert_eq!(n0, host.world.newest_cv_through(host.world.first_day));
    let r: Value = host
        .http
        .post(format!("{}/_sim/advance?days=40", host.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let day = host.world.first_day + chrono::Duration::days(40);
    assert_eq!(r["day"], day.to_string());
    let n1 = host.newest(&token).await;
    assert!(n1 > n0);
    assert_eq!(n1, r["newestChangeVersion"].as_u64().unwrap());
    let r: Value = host
        .http
        .post(format!("{}/_sim/advance?to=2099-01-01", host.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["day"], host.world.last_day.to_string());
    assert_eq!(r["done"], true);
    assert_eq!(host.newest(&token).await, host.world.log.len() as u64);
}

#[tokio::test]
async fn offset_paging_is_capped_and_partitions_page_the_same_rows() {
    let host = start(ServerOptions {
        max_page_size: 50,
        ..ServerOptions::default()
    })
    .await;
    host.handle
        .set_day(chrono::NaiveDate::from_ymd_opt(2024, 12, 1).unwrap());
    let token = host.token().await;
    let newest = host.newest(&token).await;
    let expected = edfi_district_attendance_count(&host.world, host.handle.day());
    assert!(expected > 100);

    // The cap wins over a larger limit; Total-Count reports the whole window.
    let (v, h) = host
        .get_json(
            &token,
            "/data/v3/ed-fi/studentSchoolAttendanceEvents?limit=100&totalCount=true",
        )
        .await;
    assert_eq!(v.as_array().unwrap().len(), 50);
    assert_eq!(h["total-count"].to_str().unwrap(), expected.to_string());
    // Default page size is 25.
    let (v, h) = host
        .get_json(&token, "/data/v3/ed-fi/studentSchoolAttendanceEvents")
        .await;
    assert_eq!(v.as_array().unwrap().len(), 25);
    assert!(!h.contains_key("total-count"));

    let by_offset = host
        .page_all(&token, "studentSchoolAttendanceEvents", 0, newest)
        .await;
    assert_eq!(by_offset.len(), expected);
    let ids: HashSet<String> = by_offset
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), expected, "no row twice");

    // The shape of one event (Ed-Fi DS 5).
    let e = &by_offset[0];
    assert!(e["schoolReference"]["schoolId"].is_u64());
    assert!(e["sessionReference"]["sessionName"]
        .as_str()
        .unwrap()
        .contains("Semester"));
    assert!(e["attendanceEventCategoryDescriptor"]
        .as_str()
        .unwrap()
        .starts_with("uri://"));
    assert!(e["eventDate"].is_string() && e["_lastModifiedDate"].is_string());
    assert_eq!(e["id"].as_str().unwrap().len(), 32);

    // Partitions → page tokens → pages with Next-Page-Token.
    let (v, _) = host
        .get_json(
            &token,
            &format!("/data/v3/ed-fi/studentSchoolAttendanceEvents/partitions?number=3&minChangeVersion=0&maxChangeVersion={newest}"),
        )
        .await;
    let tokens: Vec<String> = v["pageTokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), 3);
    let mut by_token = HashSet::new();
    let mut pages = 0;
    for t in tokens {
        let mut next = Some(t);
        while let Some(t) = next {
            let r = host
                .get(
                    &token,
                    &format!("/data/v3/ed-fi/studentSchoolAttendanceEvents?pageToken={t}&pageSize=40&minChangeVersion=0&maxChangeVersion={newest}"),
                )
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            next = r
                .headers()
                .get("next-page-token")
                .map(|v| v.to_str().unwrap().to_string());
            let rows: Vec<Value> = r.json().await.unwrap();
            assert!(rows.len() <= 40 && !rows.is_empty());
            pages += 1;
            for row in rows {
                assert!(
                    by_token.insert(row["id"].as_str().unwrap().to_string()),
                    "row twice"
                );
            }
        }
    }
    assert_eq!(by_token, ids);
    assert!(pages >= expected / 40);
}

#[tokio::test]
async fn over_cap_limit_is_rejected_when_asked_and_snapshots_404_when_unsupported() {
    let host = start(ServerOptions {
        reject_over_max_page_size: true,
        snapshots: false,
        ..ServerOptions::default()
    })
    .await;
    let token = host.token().await;
    let r = host
        .get(&token, "/data/v3/ed-fi/calendarDates?limit=501")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = host
        .get(&token, "/data/v3/ed-fi/calendarDates?limit=500")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = host
        .http
        .get(format!(
            "{}/changeQueries/v1/availableChangeVersions",
            host.base
        ))
        .bearer_auth(&token)
        .header("Use-Snapshot", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        host.get(&token, "/data/v3/ed-fi/students").await.status(),
        StatusCode::NOT_FOUND
    );
}

/// A connector's sync loop over the whole year: newest version, key changes, changed
/// records, deletes, per window. The replica must equal the final state.
#[tokio::test]
async fn change_query_sync_over_the_year_reproduces_the_final_state() {
    let world = Arc::new(generate(&SimConfig::small(11)).unwrap());
    let (key_changes, deletes) = sync_year(world).await;
    assert!(
        key_changes > 0 && deletes > 0,
        "{key_changes} key changes, {deletes} deletes"
    );
}

#[tokio::test]
async fn delete_create_corrections_and_positive_attendance_sync_too() {
    let mut config = SimConfig::small(12);
    config.districts[0].corrections = CorrectionStyle::DeleteCreate;
    config.districts[0].positive_attendance = true;
    let world = Arc::new(generate(&config).unwrap());
    let (key_changes, deletes) = sync_year(world.clone()).await;
    assert_eq!(key_changes, 0);
    let purges = world.summary().deletes;
    assert!(deletes > 0 && deletes <= purges);
}

/// Returns (key changes, deletes) seen.
async fn sync_year(world: Arc<World>) -> (usize, usize) {
    let host = start_with(world, ServerOptions::default()).await;
    let token = host.token().await;
    let mut replica: HashMap<String, Value> = HashMap::new();
    let mut last = 0u64;
    let (mut key_changes, mut deletes) = (0, 0);
    loop {
        let newest = host.newest(&token).await;
        if newest > last {
            let (min, max) = (last + 1, newest);
            for resource in [
                "calendarDates",
                "studentSchoolAssociations",
                "studentSchoolAttendanceEvents",
            ] {
                let (kc, _) = host
                    .get_json(&token, &format!("/data/v3/ed-fi/{resource}/keyChanges?minChangeVersion={min}&maxChangeVersion={max}&limit=500"))
                    .await;
                for k in kc.as_array().unwrap() {
                    let cv = k["changeVersion"].as_u64().unwrap();
                    assert!((min..=max).contains(&cv));
                    assert_ne!(k["oldKeyValues"], k["newKeyValues"]);
                    key_changes += 1;
                }
                for row in host.page_all(&token, resource, min, max).await {
                    replica.insert(row["id"].as_str().unwrap().to_string(), row);
                }
                let (del, _) = host
                    .get_json(&token, &format!("/data/v3/ed-fi/{resource}/deletes?minChangeVersion={min}&maxChangeVersion={max}&limit=500"))
                    .await;
                for d in del.as_array().unwrap() {
                    assert!(d["keyValues"].is_object());
                    replica.remove(d["id"].as_str().unwrap());
                    deletes += 1;
                }
            }
            last = newest;
        }
        if host.handle.state().done {
            break;
        }
        host.handle.advance(15);
    }
    let world = &host.world;
    let final_ids: HashSet<String> = world
        .final_view()
        .current()
        .filter(|(_, _, r, _)| world.districts[r.district as usize].spec.feed == Feed::Edfi)
        .map(|(_, id, _, _)| world.edfi_id(id))
        .collect();
    let replica_ids: HashSet<String> = replica.keys().cloned().collect();
    assert_eq!(replica_ids, final_ids);
    // Corrections landed: the replica's event for a key-changed record is excused.
    if let Some(corrected) = world
        .log
        .iter()
        .enumerate()
        .find(|(i, c)| world.is_key_change(*i) && world.records[c.record as usize].district == 0)
        .map(|(_, c)| world.edfi_id(c.record))
    {
        assert!(replica[&corrected]["attendanceEventCategoryDescriptor"]
            .as_str()
            .unwrap()
            .ends_with("#Excused Absence"));
    }
    (key_changes, deletes)
}

#[tokio::test]
async fn faults_are_injected_deterministically() {
    let world = Arc::new(generate(&SimConfig::small(11)).unwrap());
    let faults = Faults {
        rate_429: 0.3,
        rate_500: 0.2,
        retry_after_secs: 2,
        seed: 99,
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let host = start_with(
            world.clone(),
            ServerOptions {
                faults,
                ..ServerOptions::default()
            },
        )
        .await;
        let token = host.token().await;
        let mut statuses = Vec::new();
        for _ in 0..60 {
            let r = host.get(&token, "/data/v3/ed-fi/calendarDates").await;
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(r.headers()["retry-after"], "2");
            }
            statuses.push(r.status().as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let count = |s: u16| runs[0].iter().filter(|x| **x == s).count();
    assert!(
        count(429) >= 5 && count(500) >= 3 && count(200) >= 15,
        "{:?}",
        runs[0]
    );

    // Faults can be switched off at run time.
    let host = start_with(
        world,
        ServerOptions {
            faults,
            ..ServerOptions::default()
        },
    )
    .await;
    let r = host
        .http
        .post(format!("{}/_sim/faults?rate429=0&rate500=0", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = host.token().await;
    for _ in 0..20 {
        assert_eq!(
            host.get(&token, "/data/v3/ed-fi/calendarDates")
                .await
                .status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn wall_clock_advances_the_day() {
    let host = start(ServerOptions {
        day_every_ms: Some(20),
        ..ServerOptions::default()
    })
    .await;
    let first = host.handle.day();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(host.handle.day() > first);
}

#[tokio::test]
async fn serves_only_the_districts_asked_for() {
    let world = Arc::new(generate(&SimConfig::small(11)).unwrap());
    let host = start_with(
        world.clone(),
        ServerOptions {
            districts: Some(vec!["d-ps".into()]),
            start_day: Some(world.last_day),
            ..ServerOptions::default()
        },
    )
    .await;
    let token = host.token().await;
    let (_, h) = host
        .get_json(
            &token,
            "/data/v3/ed-fi/studentSchoolAssociations?totalCount=true&limit=1",
        )
        .await;
    let n: usize = h["total-count"].to_str().unwrap().parse().unwrap();
    let expected = world
        .final_view()
        .current()
        .filter(|(_, _, r, _)| r.resource == Resource::StudentSchoolAssociations && r.district == 1)
        .count();
    assert_eq!(n, expected);
}

#[tokio::test]
async fn a_reveal_limit_shows_a_day_s_changes_gradually() {
    let host = start(ServerOptions::default()).await;
    // The day with the most changes.
    let w = &host.world;
    let day = w
        .first_day
        .iter_days()
        .skip(1)
        .take_while(|d| *d <= w.last_day)
        .max_by_key(|d| w.newest_cv_through(*d) - w.newest_cv_through(d.pred_opt().unwrap()))
        .unwrap();
    let (from, to) = (
        w.newest_cv_through(day.pred_opt().unwrap()),
        w.newest_cv_through(day),
    );
    assert!(to > from + 10, "the day has changes ({from}..{to})");
    let token = host.token().await;
    // Hold the day back, then move the clock: nothing of the day shows yet.
    host.handle.set_reveal_limit(Some(from));
    host.handle.set_day(day);
    assert_eq!(host.newest(&token).await, from);
    let middle = from + (to - from) / 2;
    host.handle.set_reveal_limit(Some(middle));
    assert_eq!(host.newest(&token).await, middle);
    assert_eq!(host.handle.state().newest_change_version, middle);
    // Only rows changed up to the limit are served.
    let rows = host
        .page_all(&token, "studentSchoolAttendanceEvents", from, to)
        .await;
    let expected = host.world.log[from as usize..middle as usize]
        .iter()
        .filter(|c| {
            let r = &host.world.records[c.record as usize];
            r.resource == Resource::StudentSchoolAttendanceEvents
                && host.world.districts[r.district as usize].spec.feed == Feed::Edfi
                && !matches!(c.op, rollcall_sis_simulator::model::Op::Delete)
                && c.next_cv.is_none_or(|n| n > middle)
        })
        .count();
    assert_eq!(rows.len(), expected);
    // A limit beyond the day changes nothing; none shows the whole day.
    host.handle.set_reveal_limit(Some(to + 1_000_000));
    assert_eq!(host.newest(&token).await, to);
    host.handle.set_reveal_limit(None);
    assert_eq!(host.newest(&token).await, to);
}
