//! USB panic buttons and foot switches that present as a keyboard, through evdev: one key of one
//! input device as an [`EdgeSource`]. The device is grabbed, so the key does not also type into
//! whatever else reads the keyboard.

use std::path::Path;

use evdev::{EventSummary, KeyCode};

use super::button::{EdgeSource, InputError};

/// A key of an input device.
pub struct KeyInput {
    events: evdev::EventStream,
    key: KeyCode,
    level: bool,
}

impl KeyInput {
    /// Opens `device` (grabbing it when `grab`) and watches `key`.
    pub fn open(device: &Path, key: &str, grab: bool) -> Result<KeyInput, InputError> {
        let key: KeyCode = key
            .parse()
            .map_err(|_| InputError::Open(format!("unknown key {key}")))?;
        let open_error = |e: std::io::Error| {
            let hint = match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    " (is the service user in the input group?)"
                }
                std::io::ErrorKind::NotFound => {
                    " (unplugged? `ls /dev/input/by-id/` lists what is there)"
                }
                _ => "",
            };
            InputError::Open(format!("{}: {e}{hint}", device.display()))
        };
        let mut dev = evdev::Device::open(device).map_err(open_error)?;
        if !dev.supported_keys().is_some_and(|keys| keys.contains(key)) {
            return Err(InputError::Open(format!(
                "{} has no key {key:?}",
                device.display()
            )));
        }
        if grab {
            dev.grab().map_err(|e| {
                InputError::Open(format!(
                    "{}: cannot take it exclusively: {e}",
                    device.display()
                ))
            })?;
        }
        let level = dev
            .get_key_state()
            .map(|keys| keys.contains(key))
            .unwrap_or(false);
        let events = dev.into_event_stream().map_err(open_error)?;
        Ok(KeyInput { events, key, level })
    }
}

impl EdgeSource for KeyInput {
    fn level(&self) -> Result<bool, InputError> {
        Ok(self.level)
    }

    async fn next_edge(&mut self) -> Result<bool, InputError> {
        loop {
            let event = self
                .events
                .next_event()
                .await
                .map_err(|e| InputError::Lost(format!("input device: {e}")))?;
            // 1 is a press, 0 a release; 2 is the keyboard's auto-repeat, not a new press.
            if let EventSummary::Key(_, code, value @ (0 | 1)) = event.destructure()
                && code == self.key
            {
                self.level = value == 1;
                return Ok(self.level);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has no input device to press: opening says so, clearly.
    #[test]
    fn a_missing_device_gives_a_clear_error() {
        let error = KeyInput::open(
            Path::new("/dev/input/by-id/usb-panic-button-event-kbd"),
            "KEY_F12",
            true,
        )
        .err()
        .unwrap();
        let error = error.to_string();
        assert!(
            error.contains("/dev/input/by-id/usb-panic-button-event-kbd")
                && error.contains("unplugged?"),
            "{error}"
        );
        assert!(
            KeyInput::open(Path::new("/dev/null"), "KEY_NOPE", true)
                .err()
                .unwrap()
                .to_string()
                .contains("unknown key")
        );
    }
}
