//! Tests of the harness itself: Mosquitto, the publisher and the fake OpenWhisk behave as
//! the other tests assume.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::RequestBuilder;
use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::harness::{
    Broker, BrokerOptions, Daemon, Down, FakeOpenWhisk, Fault, Publisher, RecordedFire,
    delivered_sequence_numbers, http_client, queue_across_a_restart, unique_id, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
#[should_panic(expected = "timed out after 50ms waiting for the impossible")]
async fn wait_until_names_what_it_waited_for() {
    wait_until("the impossible", Duration::from_millis(50), || false).await;
}

#[tokio::test]
#[should_panic(expected = "before announcing its HTTP port")]
async fn daemon_that_exits_at_startup_is_reported_with_its_output() {
    // Without MQTT_URL and friends the configuration is invalid: exit 2.
    Daemon::spawn(&[]).await;
}

#[tokio::test]
async fn broker_starts_on_a_free_port_and_restarts_on_the_same_one() {
    let mut broker = Broker::start(BrokerOptions::default()).await;
    let other = Broker::start(BrokerOptions {
        persistence: false,
        max_queued_messages: Some(0),
        max_inflight_messages: Some(5),
        extra_config: "queue_qos0_messages true".to_string(),
    })
    .await;
    let port = broker.port();
    assert_ne!(port, other.port());
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{port}"));

    broker.stop().await;
    assert_refused(port).await;
    broker.restart().await;
    assert_eq!(broker.port(), port);
    Publisher::connect(&broker.url(), &unique_id("selftest-pub")).await;

    broker.kill().await;
    assert_refused(port).await;
    broker.restart().await;
    Publisher::connect(&broker.url(), &unique_id("selftest-pub")).await;
    assert!(
        broker.log().contains("mosquitto version"),
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn broker_keeps_a_persistent_sessions_queue_across_a_sigterm_restart() {
    let mut broker = Broker::start(BrokerOptions::default()).await;
    let queue = queue_across_a_restart(&mut broker, Down::Sigterm).await;
    assert!(
        queue.session_present,
        "the session did not survive the restart"
    );
    assert_eq!(queue.received, queue.published);
}

#[tokio::test]
async fn publisher_knows_when_the_broker_has_a_whole_burst() {
    let broker = Broker::start(BrokerOptions::default()).await;
    let publisher = Publisher::connect(&broker.url(), &unique_id("selftest-pub")).await;
    for seq in 0..10_000 {
        let payload = format!(r#"{{"seq":{seq}}}"#);
        publisher
            .publish("selftest/burst", payload, QoS::AtLeastOnce, false)
            .await;
    }
    publisher
        .publish("selftest/burst", "qos0", QoS::AtMostOnce, false)
        .await;
    publisher.wait_all_acked(TIMEOUT).await;
}

#[tokio::test]
async fn fake_openwhisk_checks_auth_before_namespace() {
    let ow = FakeOpenWhisk::start().await;
    ow.create_trigger("t", true);
    let http = http_client(TIMEOUT);

    let (status, headers, body) = answer(http.post(trigger_url(&ow, "_", "t"))).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"],
        "The resource requires authentication, which was not supplied with the request"
    );
    assert_eq!(
        headers["www-authenticate"],
        "Basic realm=\"OpenWhisk secure realm\""
    );
    let code = body["code"].as_str().unwrap();
    assert_eq!(code.len(), 32);
    assert!(code.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(headers["x-request-id"], code);

    let auth = ow.auth();
    let uuid = auth.split_once(':').unwrap().0;
    let wrong_key = http
        .post(trigger_url(&ow, "_", "t"))
        .basic_auth(uuid, Some("x".repeat(64)));
    let (status, headers, body) = answer(wrong_key).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "The supplied authentication is invalid");
    assert!(headers.contains_key("www-authenticate"));

    let (status, _, body) = answer(fire(&ow, "someone_else", "t")).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error"],
        "The supplied authentication is not authorized to access 'someone_else/t'."
    );

    assert_eq!(answer(fire(&ow, "_", "t")).await.0, 202);
    assert_eq!(answer(fire(&ow, ow.namespace(), "t")).await.0, 202);
    assert_eq!(ow.count_status(401), 2);
    assert_eq!(ow.count_status(403), 1);
}

#[tokio::test]
async fn fake_openwhisk_answers_fires_like_a_controller() {
    let ow = FakeOpenWhisk::start().await;
    let name = "dc1 sensors@home.a&b-c";
    ow.create_trigger(name, true);
    ow.create_trigger("no-rule", false);

    let (status, headers, body) = answer(fire(&ow, "_", name).json(&json!({"seq": 1}))).await;
    assert_eq!(status, 202);
    let id = body["activationId"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert_eq!(headers["x-openwhisk-activation-id"], id);

    let response = fire(&ow, "_", "no-rule").send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.text().await.unwrap().is_empty());

    let (status, _, body) = answer(fire(&ow, "_", "missing")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "The requested resource does not exist.");

    let (status, _, body) = answer(fire(&ow, "_", name).json(&json!([1, 2]))).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("The request content was malformed:\n")
    );
    let text_body = fire(&ow, "_", name)
        .header("content-type", "text/plain")
        .body("{}");
    assert_eq!(answer(text_body).await.0, 415);

    let large = json!({ "body": "x".repeat(1_048_576) });
    let (status, _, body) = answer(fire(&ow, "_", name).json(&large)).await;
    assert_eq!(status, 413);
    let size = large.to_string().len();
    assert_eq!(
        body["error"],
        format!("Request larger than allowed: {size} > 1048576 bytes.")
    );

    let fires = ow.fires();
    assert_eq!(fires.len(), 6);
    assert_eq!(
        (fires[0].namespace.as_str(), fires[0].trigger.as_str()),
        ("_", name)
    );
    assert_eq!(fires[0].body, json!({"seq": 1}));
    assert!(
        fires[0]
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/json")
    );
    assert_eq!(fires[1].body, Value::Null);
    let statuses: Vec<u16> = fires.iter().map(|f| f.status).collect();
    assert_eq!(statuses, [202, 204, 404, 400, 415, 413]);
    assert_eq!(ow.accepted().len(), 2);
}

#[tokio::test]
async fn fake_openwhisk_throttles_fires_per_fixed_minute() {
    let ow = FakeOpenWhisk::start().await;
    ow.create_trigger("t", true);
    // The window is the wall-clock minute: retry if the fires straddled a minute boundary.
    for _ in 0..3 {
        let minute = current_minute();
        ow.set_fires_per_minute(Some(3));
        let mut answers = Vec::new();
        for trigger in ["t", "missing", "t", "t", "t"] {
            answers.push(answer(fire(&ow, "_", trigger)).await);
        }
        if current_minute() != minute {
            continue;
        }
        let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        assert_eq!(statuses, [202, 404, 202, 429, 429]);
        let messages: Vec<&Value> = answers[3..].iter().map(|a| &a.2["error"]).collect();
        assert_eq!(
            messages,
            [
                "Too many requests in the last minute (count: 4, allowed: 3).",
                "Too many requests in the last minute (count: 5, allowed: 3)."
            ]
        );
        return;
    }
    panic!("every attempt straddled a minute boundary");
}

#[tokio::test]
async fn fake_openwhisk_manages_triggers_and_namespaces() {
    let ow = FakeOpenWhisk::start().await;
    let http = http_client(TIMEOUT);
    for path in ["/ping", "/api/v1"] {
        let response = http
            .get(format!("{}{path}", ow.api_host()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "pong");
    }
    let namespaces = with_key(
        &ow,
        http.get(format!("{}/api/v1/namespaces", ow.api_host())),
    );
    assert_eq!(answer(namespaces).await.2, json!([ow.namespace()]));

    let url = trigger_url(&ow, "_", "t");
    let params = json!({"parameters": [{"key": "dc", "value": "dc1"}]});
    let (status, _, body) = answer(with_key(&ow, http.put(&url).json(&params))).await;
    assert_eq!(status, 200);
    assert_eq!(body["namespace"], ow.namespace());
    assert_eq!(body["parameters"], params["parameters"]);
    assert!(body.get("rules").is_none());
    assert_eq!(answer(with_key(&ow, http.put(&url))).await.0, 409);
    let overwrite = http.put(format!("{url}?overwrite=true"));
    assert_eq!(answer(with_key(&ow, overwrite)).await.0, 200);
    assert_eq!(answer(fire(&ow, "_", "t")).await.0, 204);

    ow.create_trigger("t", true);
    let (status, _, body) = answer(with_key(&ow, http.get(&url))).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "t");
    let rules = body["rules"].as_object().unwrap();
    assert!(rules.values().all(|rule| rule["status"] == "active"));
    assert_eq!(answer(with_key(&ow, http.delete(&url))).await.0, 200);
    assert_eq!(answer(with_key(&ow, http.get(&url))).await.0, 404);
    assert_eq!(answer(fire(&ow, "_", "t")).await.0, 404);
}

#[tokio::test]
async fn fake_openwhisk_refuses_connections_while_down() {
    let ow = FakeOpenWhisk::start().await;
    ow.create_trigger("t", true);
    let keep_alive_client = http_client(TIMEOUT);
    let post = || with_key(&ow, keep_alive_client.post(trigger_url(&ow, "_", "t")));
    assert_eq!(answer(post()).await.0, 202);

    ow.refuse_connections().await;
    let port = ow.api_host().rsplit_once(':').unwrap().1.parse().unwrap();
    assert_refused(port).await;
    assert!(
        post().send().await.is_err(),
        "a request got through while down"
    );

    ow.accept_connections().await;
    assert_eq!(ow.api_host(), format!("http://127.0.0.1:{port}"));
    assert_eq!(answer(post()).await.0, 202);
    assert_eq!(ow.accepted().len(), 2);
}

#[tokio::test]
async fn fake_openwhisk_injects_faults_into_fires() {
    let ow = FakeOpenWhisk::start().await;
    ow.create_trigger("t", true);

    ow.set_fault(Fault::Status(503));
    let (status, _, body) = answer(fire(&ow, "_", "t")).await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("System is overloaded, try again later."))
    );

    ow.set_fault(Fault::NginxHtml(502));
    let response = fire(&ow, "_", "t").send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("<h1>502 Bad Gateway</h1>")
    );

    ow.set_fault(Fault::TooManyRequests {
        retry_after_secs: Some(7),
    });
    let (status, headers, body) = answer(fire(&ow, "_", "t")).await;
    assert_eq!(
        (status, &headers["retry-after"]),
        (429, &"7".parse().unwrap())
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Too many requests in the last minute")
    );

    ow.set_fault(Fault::Reset);
    assert!(
        fire(&ow, "_", "t").send().await.is_err(),
        "a reset fire got an answer"
    );

    ow.set_fault(Fault::RejectBodiesContaining("poison".to_string(), 400));
    assert_eq!(
        answer(fire(&ow, "_", "t").json(&json!({"x": "poison"})))
            .await
            .0,
        400
    );
    assert_eq!(
        answer(fire(&ow, "_", "t").json(&json!({"x": "fine"})))
            .await
            .0,
        202
    );

    ow.set_fault(Fault::Slow(Duration::from_millis(500)));
    let slow_fire = tokio::spawn(fire(&ow, "_", "t").send());
    wait_until("the slow fire to be in flight", TIMEOUT, || {
        ow.in_flight() == 1
    })
    .await;
    assert_eq!(slow_fire.await.unwrap().unwrap().status(), 202);
    wait_until("the slow fire to finish", TIMEOUT, || ow.in_flight() == 0).await;

    ow.set_fault(Fault::None);
    assert_eq!(answer(fire(&ow, "_", "t")).await.0, 202);
    let statuses: Vec<u16> = ow.fires().iter().map(|f| f.status).collect();
    assert_eq!(statuses, [503, 502, 429, 0, 400, 202, 202, 202]);
}

#[tokio::test]
async fn fake_openwhisk_redirects_a_fire_to_a_get_that_answers_200() {
    let ow = FakeOpenWhisk::start().await;
    ow.create_trigger("t", true);
    ow.set_fault(Fault::Redirect(301));
    let not_following = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = trigger_url(&ow, "_", "t");
    let response = with_key(&ow, not_following.post(&url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 301);
    assert_eq!(response.headers()["location"], url.as_str());
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("301 Moved Permanently")
    );
    // Following it, as a browser would, turns the fire into a GET that succeeds.
    assert_eq!(
        answer(with_key(&ow, http_client(TIMEOUT).get(&url)))
            .await
            .0,
        200
    );
    let statuses: Vec<u16> = ow.fires().iter().map(|f| f.status).collect();
    assert_eq!(statuses, [301], "only the POST is a fire");
}

#[tokio::test]
async fn fake_openwhisk_answers_413_above_the_namespace_payload_limit() {
    let ow = FakeOpenWhisk::start().await;
    ow.create_trigger("t", true);
    ow.set_max_payload_bytes(100);
    let (status, _, error) = answer(json_of_len(fire(&ow, "_", "t"), 101)).await;
    assert_eq!(status, 413);
    assert_eq!(
        error["error"],
        "Request larger than allowed: 101 > 100 bytes."
    );
    assert_eq!(answer(json_of_len(fire(&ow, "_", "t"), 100)).await.0, 202);
}

#[tokio::test]
async fn fake_openwhisk_keeps_the_delivered_sequence_numbers_up_to_date() {
    let ow = FakeOpenWhisk::start().await;
    ow.create_trigger("t", true);
    for seq in [3, 1, 3] {
        assert_eq!(answer(fire(&ow, "_", "t").json(&message(seq))).await.0, 202);
    }
    ow.set_fault(Fault::Status(500));
    assert_eq!(answer(fire(&ow, "_", "t").json(&message(9))).await.0, 500);

    let (delivered, duplicates) = ow.delivered();
    assert_eq!(delivered.iter().copied().collect::<Vec<_>>(), [1, 3]);
    assert_eq!(duplicates, 1);
    assert_eq!(
        delivered_sequence_numbers(&ow.accepted()),
        (delivered, duplicates)
    );
}

#[tokio::test]
async fn fake_openwhisk_throttles_each_namespace_in_its_own_window() {
    // The window is the wall-clock minute: retry if the fires straddled a minute boundary.
    for _ in 0..3 {
        let ow = FakeOpenWhisk::start().await;
        let b = ow.add_namespace();
        ow.create_trigger("t", true);
        b.create_trigger("t", true);
        let minute = current_minute();
        ow.set_fires_per_minute(Some(1));
        b.set_fires_per_minute(Some(2));
        let mut answers = Vec::new();
        for (auth, seq) in [(ow.auth(), 1), (ow.auth(), 2), (b.auth(), 3), (b.auth(), 4)] {
            let request = fire_with(&auth, &ow, "_", "t").json(&message(seq));
            answers.push(answer(request).await);
        }
        if current_minute() != minute {
            continue;
        }
        let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        assert_eq!(statuses, [202, 429, 202, 202]);
        assert_eq!(
            answers[1].2["error"],
            "Too many requests in the last minute (count: 2, allowed: 1)."
        );
        assert_eq!((ow.count_status(429), b.count_status(429)), (1, 0));
        let delivered = |(seqs, duplicates): (BTreeSet<u64>, usize)| {
            (seqs.into_iter().collect::<Vec<_>>(), duplicates)
        };
        assert_eq!(delivered(ow.delivered()), (vec![1], 0));
        assert_eq!(delivered(b.delivered()), (vec![3, 4], 0));
        assert_eq!(b.accepted().len(), 2);
        return;
    }
    panic!("every attempt straddled a minute boundary");
}

#[tokio::test]
async fn fake_openwhisk_forbids_a_key_the_other_namespaces_before_throttling() {
    let ow = FakeOpenWhisk::start().await;
    let b = ow.add_namespace();
    b.create_trigger("t", true);
    // With no fire allowed, any fire that got past entitlement would be a 429.
    ow.set_fires_per_minute(Some(0));
    let http = http_client(TIMEOUT);
    let url = trigger_url(&ow, b.name(), "t");
    let forbidden = format!(
        "The supplied authentication is not authorized to access '{}/t'.",
        b.name()
    );
    let requests = [
        http.post(&url),
        http.get(&url),
        http.put(format!("{url}?overwrite=true")),
        http.delete(&url),
    ];
    for request in requests {
        let (status, _, body) = answer(with_auth(&ow.auth(), request)).await;
        assert_eq!((status, &body["error"]), (403, &json!(forbidden)));
    }

    // B's trigger is untouched, and B's own key reaches it by name.
    assert_eq!(answer(with_auth(&b.auth(), http.get(&url))).await.0, 200);
    assert_eq!(
        answer(fire_with(&b.auth(), &ow, b.name(), "t")).await.0,
        202
    );
    let (status, _, body) = answer(fire(&ow, "_", "t")).await;
    assert_eq!(
        (status, &body["error"]),
        (
            429,
            &json!("Too many requests in the last minute (count: 1, allowed: 0).")
        ),
        "the 403 did not count against the limit"
    );

    // A fire is the caller's, wherever it was addressed.
    let fires = ow.fires();
    let seen: Vec<_> = fires
        .iter()
        .map(|f| {
            (
                f.status,
                f.resolved_namespace.as_deref(),
                f.trigger.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(403, Some(b.name()), "t"), (429, Some(ow.namespace()), "t")]
    );
    let statuses: Vec<u16> = b.fires().iter().map(|f| f.status).collect();
    assert_eq!(statuses, [202]);
}

#[tokio::test]
async fn fake_openwhisk_resolves_underscore_to_each_keys_namespace() {
    let ow = FakeOpenWhisk::start().await;
    let b = ow.add_namespace();
    assert_ne!(b.name(), ow.namespace());
    assert_ne!(b.auth(), ow.auth());
    ow.create_trigger("t", true);
    b.create_trigger("t", false);
    let http = http_client(TIMEOUT);
    let namespaces_url = format!("{}/api/v1/namespaces", ow.api_host());
    let keys = [
        (ow.auth(), ow.namespace(), true, 202),
        (b.auth(), b.name(), false, 204),
    ];
    for (auth, namespace, has_rules, fire_status) in keys {
        let namespaces = answer(with_auth(&auth, http.get(&namespaces_url))).await;
        assert_eq!((namespaces.0, namespaces.2), (200, json!([namespace])));
        let get = with_auth(&auth, http.get(trigger_url(&ow, "_", "t")));
        let (status, _, trigger) = answer(get).await;
        assert_eq!((status, &trigger["namespace"]), (200, &json!(namespace)));
        assert_eq!(trigger.get("rules").is_some(), has_rules, "{trigger}");
        assert_eq!(answer(fire_with(&auth, &ow, "_", "t")).await.0, fire_status);
    }
    assert_eq!(answer(http.get(&namespaces_url)).await.0, 401);

    for (fires, namespace) in [(ow.fires(), ow.namespace()), (b.fires(), b.name())] {
        let [fire] = fires.as_slice() else {
            panic!("one fire expected: {fires:?}")
        };
        assert_eq!(fire.namespace, "_");
        assert_eq!(fire.resolved_namespace.as_deref(), Some(namespace));
        assert_eq!(fire.trigger, "t");
    }

    b.delete_trigger("t");
    assert_eq!(answer(fire_with(&b.auth(), &ow, "_", "t")).await.0, 404);
    assert_eq!(answer(fire(&ow, "_", "t")).await.0, 202);
}

#[tokio::test]
async fn fake_openwhisk_rejects_a_revoked_key_and_an_unknown_one() {
    let ow = FakeOpenWhisk::start().await;
    let b = ow.add_namespace();
    ow.create_trigger("t", true);
    b.create_trigger("t", true);
    assert_eq!(answer(fire_with(&b.auth(), &ow, "_", "t")).await.0, 202);

    b.revoke_key();
    let http = http_client(TIMEOUT);
    let url = trigger_url(&ow, "_", "t");
    let requests = [
        http.post(&url),
        http.get(&url),
        http.get(format!("{}/api/v1/namespaces", ow.api_host())),
    ];
    for request in requests {
        let (status, headers, body) = answer(with_auth(&b.auth(), request)).await;
        assert_eq!(
            (status, &body["error"]),
            (401, &json!("The supplied authentication is invalid"))
        );
        assert_eq!(
            headers["www-authenticate"],
            "Basic realm=\"OpenWhisk secure realm\""
        );
    }
    let unknown = format!("{}:{}", "0".repeat(32), "k".repeat(64));
    let (status, _, body) = answer(fire_with(&unknown, &ow, b.name(), "t")).await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("The supplied authentication is invalid"))
    );

    // The revoked key's fire is B's by its uuid, the unknown key's by its path.
    let seen: Vec<_> = b
        .fires()
        .iter()
        .map(|f| (f.status, f.resolved_namespace.clone()))
        .collect();
    let b_name = Some(b.name().to_string());
    assert_eq!(
        seen,
        [(202, b_name.clone()), (401, b_name.clone()), (401, b_name)]
    );
    assert_eq!(
        answer(fire(&ow, "_", "t")).await.0,
        202,
        "A's key still works"
    );
    assert_eq!(ow.count_status(401), 0);
}

#[tokio::test]
async fn fake_openwhisk_keeps_faults_and_payload_limits_per_namespace() {
    let ow = FakeOpenWhisk::start().await;
    let b = ow.add_namespace();
    ow.create_trigger("t", true);
    b.create_trigger("t", true);
    let fire_a = || fire(&ow, "_", "t");
    let fire_b = || fire_with(&b.auth(), &ow, "_", "t");

    b.set_fault(Fault::Status(503));
    assert_eq!(answer(fire_a()).await.0, 202);
    assert_eq!(answer(fire_b()).await.0, 503);
    ow.set_fault(Fault::Reset);
    assert!(fire_a().send().await.is_err(), "a reset fire got an answer");
    assert_eq!(answer(fire_b()).await.0, 503);

    ow.set_fault(Fault::None);
    b.set_fault(Fault::None);
    b.set_max_payload_bytes(100);
    let (status, _, error) = answer(json_of_len(fire_b(), 101)).await;
    assert_eq!(
        (status, &error["error"]),
        (413, &json!("Request larger than allowed: 101 > 100 bytes."))
    );
    assert_eq!(answer(json_of_len(fire_a(), 101)).await.0, 202);

    let statuses = |fires: Vec<RecordedFire>| fires.iter().map(|f| f.status).collect::<Vec<_>>();
    assert_eq!(statuses(ow.fires()), [202, 0, 202]);
    assert_eq!(statuses(b.fires()), [503, 503, 413]);
}

#[test]
fn delivered_sequence_numbers_reads_message_and_batch_fires() {
    let message =
        |seq: u64| json!({"type": "message", "body": format!(r#"{{"seq":{seq},"t":1}}"#)});
    let fire = |status: u16, body: Value| RecordedFire {
        namespace: "_".to_string(),
        resolved_namespace: None,
        trigger: "t".to_string(),
        raw_body: body.to_string().into_bytes(),
        body,
        headers: Vec::new(),
        status,
        at: SystemTime::now(),
    };
    let fires = [
        fire(202, message(1)),
        fire(204, message(2)),
        fire(202, message(2)),
        fire(
            202,
            json!({"type": "batch", "messages": [message(3), message(4)]}),
        ),
        fire(503, message(5)),
        fire(202, json!({"type": "alarm"})),
    ];
    let (delivered, duplicates) = delivered_sequence_numbers(&fires);
    assert_eq!(delivered.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(duplicates, 1);
}

async fn assert_refused(port: u16) {
    let error = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}");
}

/// What a path segment keeps unescaped: RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `{api_host}/api/v1/namespaces/{namespace}/triggers/{trigger}`, segments percent-encoded.
fn trigger_url(ow: &FakeOpenWhisk, namespace: &str, trigger: &str) -> String {
    format!(
        "{}/api/v1/namespaces/{}/triggers/{}",
        ow.api_host(),
        utf8_percent_encode(namespace, PATH_SEGMENT),
        utf8_percent_encode(trigger, PATH_SEGMENT)
    )
}

/// The request with the default namespace's key.
fn with_key(ow: &FakeOpenWhisk, request: RequestBuilder) -> RequestBuilder {
    with_auth(&ow.auth(), request)
}

/// The request with Basic credentials `auth` (`uuid:key`).
fn with_auth(auth: &str, request: RequestBuilder) -> RequestBuilder {
    let (uuid, key) = auth.split_once(':').unwrap();
    request.basic_auth(uuid, Some(key))
}

/// A fire with the default namespace's key, on a fresh client.
fn fire(ow: &FakeOpenWhisk, namespace: &str, trigger: &str) -> RequestBuilder {
    fire_with(&ow.auth(), ow, namespace, trigger)
}

/// A fire with the key `auth`, on a fresh client.
fn fire_with(auth: &str, ow: &FakeOpenWhisk, namespace: &str, trigger: &str) -> RequestBuilder {
    with_auth(
        auth,
        http_client(TIMEOUT).post(trigger_url(ow, namespace, trigger)),
    )
}

/// The request with a JSON object body of exactly `len` bytes.
fn json_of_len(request: RequestBuilder, len: usize) -> RequestBuilder {
    let padding = "x".repeat(len - r#"{"x":""}"#.len());
    request
        .header("content-type", "application/json")
        .body(format!(r#"{{"x":"{padding}"}}"#))
}

/// A message fire's body carrying `{"seq": seq}`, as the provider sends it.
fn message(seq: u64) -> Value {
    json!({"type": "message", "body": format!(r#"{{"seq":{seq}}}"#)})
}

/// Status, headers and JSON body (`Null` if not JSON) of the answer.
async fn answer(request: RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.expect("the fake OpenWhisk answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn current_minute() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    since_epoch.as_secs() / 60
}
