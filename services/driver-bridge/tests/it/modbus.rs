//! `modbus-tcp` against a real Modbus TCP server nobody here wrote (pymodbus): registers of
//! every kind the map allows read into the contract's channels, commands written to the
//! control's register, and the roaster going away and coming back.

use std::time::Duration;

use driver_bridge::modbus::{DataType, ModbusSettings, Register, WordOrder};
use driver_bridge::{DeviceConfig, DriverKind, SimSettings};
use model::command::{Control, Outcome};
use testkit::Server;
use testkit::modbus::{HOLDING, INPUT, PymodbusServer};

use crate::{CommandSigner, Watcher, bridge};

fn register(
    channel: &str,
    address: u16,
    function: u8,
    data_type: DataType,
    word_order: WordOrder,
    scale: f64,
) -> Register {
    Register {
        channel: channel.into(),
        address,
        function,
        data_type,
        word_order,
        scale,
        offset: 0.0,
    }
}

/// A roaster's map as such maps come: BT a signed tenth of a degree in a holding register, ET
/// a float in two input registers low word first, gas a plain percentage, air in hundredths
/// over two holding registers.
fn device(id: &str, server: &PymodbusServer) -> DeviceConfig {
    DeviceConfig {
        id: id.to_owned(),
        driver: DriverKind::ModbusTcp,
        sim: SimSettings::default(),
        modbus: Some(ModbusSettings {
            address: server.address(),
            unit_id: 1,
            timeout_ms: 500,
            registers: vec![
                register("bt", 0, HOLDING, DataType::I16, WordOrder::Big, 0.1),
                register("et", 10, INPUT, DataType::F32, WordOrder::Little, 1.0),
                register("gas", 20, HOLDING, DataType::U16, WordOrder::Big, 1.0),
                register("air", 22, HOLDING, DataType::U32, WordOrder::Big, 0.01),
            ],
        }),
        key_label: None,
    }
}

fn f32_little(v: f32) -> [u16; 2] {
    let b = v.to_bits();
    [b as u16, (b >> 16) as u16]
}

async fn view(
    app: &testkit::TestService<driver_bridge::DriverBridge>,
    id: &str,
) -> serde_json::Value {
    app.get(&format!("/devices/{id}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_registers_are_read_written_and_survive_the_roaster_going_away() {
    if !testkit::require(
        Server::Mosquitto,
        "modbus_registers_are_read_written_and_survive_the_roaster_going_away",
    ) {
        return;
    }
    let Some(mut server) = PymodbusServer::start(
        "modbus_registers_are_read_written_and_survive_the_roaster_going_away",
    )
    .await
    else {
        return;
    };
    server.set(HOLDING, 0, &[2013]).await;
    server.set(INPUT, 10, &f32_little(240.5)).await;
    server.set(HOLDING, 20, &[70]).await;
    server.set(HOLDING, 22, &[0, 3500]).await;

    let id = testkit::unique_name("dmb");
    let signer = CommandSigner::new("command-1");
    let keys_dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(1883, &[&id]).await;
    let app = bridge(
        &Server::Mosquitto.url(),
        vec![device(&id, &server)],
        vec![signer.trusted()],
        keys_dir.path(),
        None,
    )
    .await;

    let first = testkit::eventually(
        Duration::from_secs(20),
        "a point read over Modbus",
        || async { watcher.points(&id).into_iter().next() },
    )
    .await;
    assert_eq!(first["channels"]["bt"], 201.3);
    assert_eq!(first["channels"]["et"], 240.5);
    assert_eq!(first["channels"]["gas"], 70.0);
    assert_eq!(first["channels"]["air"], 35.0);
    let session = first["session"].as_str().unwrap().to_owned();

    // Commands land in the control's register, in its type and scale.
    let key = keys::PublicKey::from_base64(view(&app, &id).await["public_key"].as_str().unwrap())
        .unwrap();
    for (control, value, address, words) in [
        (Control::Gas, 55.0, 20, vec![55]),
        (Control::Air, 42.5, 22, vec![0, 4250]),
    ] {
        let cmd = signer.command(&id, &session, control, value);
        watcher.publish_command(&id, cmd.to_json()).await;
        let ack = watcher.ack(&id, &key, &cmd.id).await;
        assert_eq!(ack.outcome, Outcome::Applied, "{:?}", ack.detail);
        assert_eq!(
            server.get(HOLDING, address, words.len() as u16).await,
            words
        );
    }
    testkit::eventually(Duration::from_secs(10), "gas 55 read back", || async {
        watcher
            .points(&id)
            .into_iter()
            .find(|p| p["channels"]["gas"] == 55.0)
    })
    .await;

    // The roaster goes away: the device says so, keeps trying, and a command is refused.
    server.stop().await;
    let away = testkit::eventually(
        Duration::from_secs(20),
        "the device unreachable",
        || async {
            let v = view(&app, &id).await;
            (v["state"] == "unreachable").then_some(v)
        },
    )
    .await;
    assert!(
        away["last_error"].as_str().unwrap().contains("unreachable"),
        "{away}"
    );
    let cmd = signer.command(&id, &session, Control::Gas, 60.0);
    watcher.publish_command(&id, cmd.to_json()).await;
    let ack = watcher.ack(&id, &key, &cmd.id).await;
    assert_eq!(
        ack.reason,
        Some(model::command::Refusal::DriverError),
        "{:?}",
        ack.detail
    );

    // It comes back, with BT moved on: sampling resumes in the same session.
    server.set_preset(HOLDING, 0, 2050);
    server.restart().await;
    let back = testkit::eventually(Duration::from_secs(30), "sampling resumed", || async {
        watcher
            .points(&id)
            .into_iter()
            .find(|p| p["channels"]["bt"] == 205.0)
    })
    .await;
    assert_eq!(back["session"], session.as_str());
    assert_eq!(view(&app, &id).await["state"], "sampling");
    let seqs: Vec<u64> = watcher
        .points(&id)
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    app.stop().await;
}
