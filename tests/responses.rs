//! Officers' responses reaching the store: a real box daemon and mosquitto, responses signed
//! with a desk key as a desk signs them, the box's lights, its status and its signed answers.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use alertclip::demo::teststream::TestStream;
use alertclip::trigger::buttons::light::Pattern;
use alertclip_wire::command::{
    Disposition, FOOTAGE_REQUEST_SCHEMA, FootageRequest, RESPONSE_SCHEMA, Response, ResponseState,
};
use alertclip_wire::signature::{self, SigningKey};
use common::broker::{Broker, mosquitto_pub};
use common::receiver::ReceiverProcess;
use common::*;
use serde_json::Value;
use uuid::Uuid;

const ROLLS: &str = "pre_roll = \"2s\"\npost_roll = \"1s\"";
const COMMANDS: &str = "alertclip/v1/test-site/commands";

fn desk_key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn response(event: Uuid, state: ResponseState) -> Response {
    Response {
        schema: RESPONSE_SCHEMA.into(),
        command_id: Uuid::now_v7(),
        site_id: "test-site".into(),
        event_id: event,
        state,
        eta_minutes: None,
        disposition: None,
        note: None,
        by: "lee".into(),
        desk: "precinct-5".into(),
        issued_at: alertclip::clock::rfc3339_ms(SystemTime::now()),
        signature: None,
    }
}

/// `response` signed by `key`, as the desk publishes it, checked against its schema.
fn signed(key: &SigningKey, response: &Response) -> String {
    let payload = signature::sign(key, &serde_json::to_vec(response).unwrap());
    assert_schema("response", &serde_json::from_slice(&payload).unwrap());
    String::from_utf8(payload).unwrap()
}

/// The box's answer to `command`, as the officer side receives it, signature checked.
async fn answer(receiver: &mut ReceiverProcess, command: Uuid) -> Value {
    let report = receiver
        .wait_for("an answer", |v| {
            v["type"] == "answer" && v["answer"]["command_id"] == command.to_string()
        })
        .await;
    assert_eq!(report["signature"], "valid", "{report}");
    let mut answer = report["answer"].clone();
    answer["signature"] = serde_json::json!({
        "alg": "ed25519", "key_id": "0000000000000000", "public_key": "", "sig": ""
    });
    assert_schema("answer", &answer);
    report["answer"].clone()
}

async fn shows(light: &mut tokio::sync::watch::Receiver<Pattern>, pattern: Pattern) {
    let shown = tokio::time::timeout(Duration::from_secs(30), light.wait_for(|p| *p == pattern))
        .await
        .map(|r| r.map(|p| *p));
    assert!(
        matches!(shown, Ok(Ok(_))),
        "the light never showed {pattern:?}; it shows {:?}",
        *light.borrow()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_officers_responses_reach_the_light_and_the_status_and_forgeries_are_refused() {
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let key = base64_key(&desk_key());
    // A wireless button, and a light on a GPIO line this machine does not have: what it
    // would show is known all the same.
    let tail = format!(
        "[mqtt]\nurl = \"{}\"\n\
         [[button]]\nid = \"office\"\nkind = \"mqtt\"\nlocation = \"back office\"\n\
         topic = \"zigbee2mqtt/office\"\nmatch = {{ action = \"single\" }}\n\
         [feedback]\nline = \"GPIO22\"\n\
         [desk]\nkeys = [\"{key}\"]\n",
        broker.url()
    );
    let rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    wait_buffered(rig.camera(0), 2.5).await;
    let mut light = rig.daemon.lights()[0].pattern.clone();
    assert_eq!(rig.daemon.lights()[0].name, "box");

    mosquitto_pub(
        broker.port,
        "zigbee2mqtt/office",
        r#"{"action":"single"}"#,
        &[],
    );
    let alert = receiver
        .wait_for("the alert", |v| v["type"] == "alert")
        .await;
    let event: Uuid = alert["alert"]["event_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    shows(&mut light, Pattern::On).await;

    // Acknowledged: a double flash, the status says by whom, and the box answers.
    let ack = response(event, ResponseState::Acknowledged);
    let ack_payload = signed(&desk_key(), &ack);
    mosquitto_pub(broker.port, COMMANDS, &ack_payload, &[]);
    // The answer names the desk key that signed what it answers: the desk that sent it
    // knows it is its own.
    let answered = answer(&mut receiver, ack.command_id).await;
    let desk_id = alertclip_wire::signature::key_id(&desk_key().verifying_key());
    assert_eq!(
        (answered["outcome"].as_str(), answered["key_id"].as_str()),
        (Some("applied"), Some(desk_id.as_str())),
        "{answered}"
    );
    shows(&mut light, Pattern::DoubleFlash).await;
    let recent = rig.daemon.recent_events();
    let shown = recent[0].response.as_ref().unwrap();
    assert_eq!(
        (recent[0].event_id, shown.state, shown.by.as_str()),
        (event, ResponseState::Acknowledged, "lee")
    );
    // The retained status carries it to the desk, and what the light shows.
    let status = receiver
        .wait_for("a status with the response and the light", |v| {
            v["type"] == "status"
                && v["status"]["responses"][event.to_string()]["state"] == "acknowledged"
                && v["status"]["lights"]["box"] == "acknowledged"
        })
        .await;
    assert_schema("status", &status["status"]);

    // Forgeries and replays change nothing, each refused with its reason.
    let stranger = SigningKey::from_bytes(&[6; 32]);
    let forged = response(event, ResponseState::Closed);
    let mut elsewhere = response(event, ResponseState::Closed);
    elsewhere.site_id = "another-shop".into();
    let unknown = response(Uuid::now_v7(), ResponseState::Closed);
    let mut stale = response(event, ResponseState::Closed);
    stale.issued_at = alertclip::clock::rfc3339_ms(SystemTime::now() - Duration::from_secs(3600));
    for (payload, command, reason) in [
        (
            signed(&stranger, &forged),
            forged.command_id,
            "not one of this box's [desk] keys",
        ),
        (
            signed(&desk_key(), &elsewhere),
            elsewhere.command_id,
            "for site another-shop",
        ),
        (
            signed(&desk_key(), &unknown),
            unknown.command_id,
            "was not raised by this box",
        ),
        (
            signed(&desk_key(), &stale),
            stale.command_id,
            "longer than [desk] max_age",
        ),
        (ack_payload.clone(), ack.command_id, "a replay"),
    ] {
        mosquitto_pub(broker.port, COMMANDS, &payload, &[]);
        let refused = receiver
            .wait_for("a refusal", |v| {
                v["type"] == "answer"
                    && v["answer"]["command_id"] == command.to_string()
                    && v["answer"]["outcome"] == "refused"
            })
            .await;
        let said = refused["answer"]["reason"].as_str().unwrap();
        assert!(said.contains(reason), "{said}");
    }
    assert_eq!(*light.borrow(), Pattern::DoubleFlash);

    // Help on the way, on scene, closed.
    let mut dispatched = response(event, ResponseState::Dispatched);
    dispatched.eta_minutes = Some(6);
    mosquitto_pub(
        broker.port,
        COMMANDS,
        &signed(&desk_key(), &dispatched),
        &[],
    );
    shows(&mut light, Pattern::LongOn).await;
    assert_eq!(
        rig.daemon.recent_events()[0]
            .response
            .as_ref()
            .unwrap()
            .summary,
        "help on the way (ETA 6 min), by lee"
    );
    let on_scene = response(event, ResponseState::OnScene);
    mosquitto_pub(broker.port, COMMANDS, &signed(&desk_key(), &on_scene), &[]);
    assert_eq!(
        answer(&mut receiver, on_scene.command_id).await["outcome"],
        "applied"
    );
    // A response issued before the one shown arrives late: it does not take its place.
    let mut late = response(event, ResponseState::Dispatched);
    late.issued_at = dispatched.issued_at.clone();
    mosquitto_pub(broker.port, COMMANDS, &signed(&desk_key(), &late), &[]);
    let answered = answer(&mut receiver, late.command_id).await;
    assert_eq!(
        (answered["outcome"].as_str(), answered["key_id"].as_str()),
        (Some("superseded"), Some(desk_id.as_str())),
        "{answered}"
    );
    let mut closed = response(event, ResponseState::Closed);
    closed.disposition = Some(Disposition::GoneOnArrival);
    mosquitto_pub(broker.port, COMMANDS, &signed(&desk_key(), &closed), &[]);
    shows(&mut light, Pattern::Off).await;
    assert_eq!(
        rig.daemon.recent_events()[0]
            .response
            .as_ref()
            .unwrap()
            .state,
        ResponseState::Closed
    );

    // A message over any command's size, retained on the commands topic, comes back on
    // every subscription: the commands have a session of their own, so alerts still go.
    let oversized = "x".repeat(80 << 10);
    mosquitto_pub(broker.port, COMMANDS, &oversized, &["-r"]);
    mosquitto_pub(
        broker.port,
        "zigbee2mqtt/office",
        r#"{"action":"single"}"#,
        &[],
    );
    // The press goes on the alert channel, signed: an update when it joins the event still
    // open, a new alert when the event's post-roll has already passed (a loaded machine).
    let press = receiver
        .wait_for("the press on the alert channel", |v| {
            (v["type"] == "update" && v["update"]["event_id"] == event.to_string())
                || (v["type"] == "alert"
                    && v["alert"]["event_id"] != event.to_string()
                    && v["alert"]["trigger"]["source"] == "office")
        })
        .await;
    assert_eq!(press["signature"], "valid", "{press}");
    common::broker::mosquitto_pub_with(broker.port, COMMANDS, &["-r", "-n"]);
    rig.stop().await;
    receiver.stop().await;
}

fn base64_key(key: &SigningKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
}

fn request(cameras: &[&str], from: SystemTime, to: SystemTime) -> FootageRequest {
    FootageRequest {
        schema: FOOTAGE_REQUEST_SCHEMA.into(),
        command_id: Uuid::now_v7(),
        site_id: "test-site".into(),
        cameras: cameras.iter().map(|c| c.to_string()).collect(),
        from: alertclip::clock::rfc3339_ms(from),
        to: alertclip::clock::rfc3339_ms(to),
        reason: "the seconds before the call".into(),
        by: "lee".into(),
        desk: "precinct-5".into(),
        issued_at: alertclip::clock::rfc3339_ms(SystemTime::now()),
        signature: None,
    }
}

fn signed_request(request: &FootageRequest) -> String {
    let payload = signature::sign(&desk_key(), &serde_json::to_vec(request).unwrap());
    assert_schema(
        "footage_request",
        &serde_json::from_slice(&payload).unwrap(),
    );
    String::from_utf8(payload).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_footage_request_yields_a_signed_clip_of_its_range_naming_the_requester_and_a_burst_is_refused_beyond_the_limit()
 {
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let tail = format!(
        "[mqtt]\nurl = \"{}\"\n[desk]\nkeys = [\"{}\"]\nrequests_per_hour = 2\n",
        broker.url(),
        base64_key(&desk_key())
    );
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    // The box holds its pre-roll (2 s) and a little more.
    wait_buffered(rig.camera(0), 3.0).await;

    // Two seconds that ended half a second ago.
    let now = SystemTime::now();
    let asked = request(
        &["cam"],
        now - Duration::from_millis(2500),
        now - Duration::from_millis(500),
    );
    mosquitto_pub(broker.port, COMMANDS, &signed_request(&asked), &[]);
    let answered = answer(&mut receiver, asked.command_id).await;
    assert_eq!(answered["outcome"], "applied", "{answered}");
    assert!(
        answered.get("reason").is_none(),
        "the box holds it all: {answered}"
    );
    let event = answered["event_id"].as_str().unwrap().to_owned();

    // Delivered as any event: an alert of kind remote naming the officer and the reason.
    let alert = receiver
        .wait_for("the request's alert", |v| {
            v["type"] == "alert" && v["alert"]["event_id"] == event.as_str()
        })
        .await;
    assert_eq!(alert["signature"], "valid");
    let trigger = &alert["alert"]["trigger"];
    assert_eq!(
        (&trigger["kind"], &trigger["source"], &trigger["note"]),
        (
            &Value::from("remote"),
            &Value::from("lee@precinct-5"),
            &Value::from("the seconds before the call")
        )
    );
    let clip = receiver
        .wait_for("the request's clip", |v| {
            v["type"] == "clip" && v["event_id"] == event.as_str()
        })
        .await;
    assert_eq!(clip["verified"], true, "{clip}");
    assert_eq!(clip["manifest"]["triggers"][0]["source"], "lee@precinct-5");
    let local = rig.next_clip().await;
    assert_eq!(local.record.event_id.to_string(), event);
    assert_eq!(
        local.record.triggers[0].note.as_deref(),
        Some("the seconds before the call")
    );
    assert!(!local.record.partial, "{:?}", local.record.partial_reason);
    let probe = ffprobe(&ReceiverProcess::path(&clip));
    probe.assert_well_formed(&ReceiverProcess::path(&clip));
    let seconds = local.record.duration_ms as f64 / 1000.0;
    assert!(
        (2.0..4.5).contains(&seconds),
        "two seconds asked, from the keyframe before: {seconds} s"
    );

    // A camera the box does not have, then a second request, then one over the limit.
    let unknown = request(&["back-door"], now - Duration::from_secs(3), now);
    mosquitto_pub(broker.port, COMMANDS, &signed_request(&unknown), &[]);
    let refused = answer(&mut receiver, unknown.command_id).await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("unknown camera \"back-door\""),
        "{refused}"
    );
    // A minute the box's memory no longer holds: refused, and not counted against the limit.
    let gone = request(
        &["cam"],
        now - Duration::from_secs(1200),
        now - Duration::from_secs(1140),
    );
    mosquitto_pub(broker.port, COMMANDS, &signed_request(&gone), &[]);
    let refused = answer(&mut receiver, gone.command_id).await;
    assert_eq!(refused["outcome"], "refused");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("no longer holds any of it"),
        "{refused}"
    );
    let now = SystemTime::now();
    let second = request(&["cam"], now - Duration::from_secs(2), now);
    mosquitto_pub(broker.port, COMMANDS, &signed_request(&second), &[]);
    assert_eq!(
        answer(&mut receiver, second.command_id).await["outcome"],
        "applied"
    );
    let third = request(&["cam"], now - Duration::from_secs(2), now);
    mosquitto_pub(broker.port, COMMANDS, &signed_request(&third), &[]);
    let limited = answer(&mut receiver, third.command_id).await;
    assert_eq!(limited["outcome"], "refused");
    assert!(
        limited["reason"]
            .as_str()
            .unwrap()
            .starts_with("rate limit"),
        "{limited}"
    );
    assert!(
        limited["reason"]
            .as_str()
            .unwrap()
            .ends_with("the next is taken in 60 min"),
        "{limited}"
    );
    rig.stop().await;
    receiver.stop().await;
}
