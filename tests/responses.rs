//! Officers' responses reaching the store: a real box daemon and mosquitto, responses signed
//! with a desk key as a desk signs them, the box's lights, its status and its signed answers.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use alertclip::demo::teststream::TestStream;
use alertclip::trigger::buttons::light::Pattern;
use alertclip_wire::command::{Disposition, RESPONSE_SCHEMA, Response, ResponseState};
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
    assert_eq!(
        answer(&mut receiver, ack.command_id).await["outcome"],
        "applied"
    );
    shows(&mut light, Pattern::DoubleFlash).await;
    let recent = rig.daemon.recent_events();
    let shown = recent[0].response.as_ref().unwrap();
    assert_eq!(
        (recent[0].event_id, shown.state, shown.by.as_str()),
        (event, ResponseState::Acknowledged, "lee")
    );
    // The retained status carries it to the desk.
    let status = receiver
        .wait_for("a status with the response", |v| {
            v["type"] == "status"
                && v["status"]["responses"][event.to_string()]["state"] == "acknowledged"
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
    assert_eq!(
        answer(&mut receiver, late.command_id).await["outcome"],
        "superseded"
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
    rig.stop().await;
    receiver.stop().await;
}

fn base64_key(key: &SigningKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
}
