//! GPIO lines through the Linux GPIO character device (uAPI v2, `gpiocdev`): a panic button's
//! contact as an [`EdgeSource`], and a feedback light as a [`Light`](crate::trigger::buttons::light::Light).
//!
//! Edges are reported relative to the line's active level, so an active-low button (to ground,
//! with the pull-up the bias provides) reports a press as a rising edge. The kernel debounces
//! the line too, where the driver supports it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpiocdev::line::{self, EdgeDetection, EdgeKind, Value};
use gpiocdev::tokio::AsyncRequest;

use super::button::{EdgeSource, InputError};
use crate::config::{Bias, LineSpec};

/// A button's line, opened for edge events.
pub struct GpioInput {
    request: AsyncRequest,
}

/// Where a line is: its chip's path and its offset.
fn locate(chip: Option<&str>, line: &LineSpec) -> Result<(PathBuf, u32), InputError> {
    let chip_path = chip.map(resolve_chip).transpose()?;
    match line {
        LineSpec::Offset(offset) => match chip_path {
            Some(path) => Ok((path, *offset)),
            None => {
                let first = gpiocdev::chip::chips()
                    .ok()
                    .and_then(|chips| chips.into_iter().next())
                    .ok_or_else(|| {
                        InputError::Open("no GPIO chip on this machine (/dev/gpiochip*)".into())
                    })?;
                Ok((first, *offset))
            }
        },
        LineSpec::Name(name) => {
            let found = gpiocdev::find_named_line(name).ok_or_else(|| {
                InputError::Open(format!(
                    "no GPIO line named {name} on this machine (see `gpioinfo`)"
                ))
            })?;
            if let Some(path) = chip_path
                && path != found.chip
            {
                return Err(InputError::Open(format!(
                    "GPIO line {name} is on {}, not {}",
                    found.chip.display(),
                    path.display()
                )));
            }
            Ok((found.chip, found.info.offset))
        }
    }
}

/// A chip named by path, by name under /dev, or by label.
fn resolve_chip(chip: &str) -> Result<PathBuf, InputError> {
    if chip.starts_with('/') {
        return Ok(PathBuf::from(chip));
    }
    let by_name = Path::new("/dev").join(chip);
    if by_name.exists() {
        return Ok(by_name);
    }
    let chips = gpiocdev::chip::chips().unwrap_or_default();
    chips
        .into_iter()
        .find(|path| {
            gpiocdev::chip::Chip::from_path(path)
                .and_then(|c| c.info())
                .is_ok_and(|info| info.label == chip)
        })
        .ok_or_else(|| {
            InputError::Open(format!(
                "no GPIO chip {chip} (a path, a name under /dev, or a label; see `gpiodetect`)"
            ))
        })
}

/// Why a request failed, with the usual remedy.
fn request_error(what: &str, path: &Path, offset: u32, error: gpiocdev::Error) -> InputError {
    let text = error.to_string();
    let hint = if text.contains("ermission") {
        " (is the service user in the gpio group?)"
    } else if text.contains("busy") || text.contains("Busy") {
        " (another program holds the line)"
    } else {
        ""
    };
    InputError::Open(format!(
        "{what} {} line {offset}: {text}{hint}",
        path.display()
    ))
}

impl GpioInput {
    /// Requests a button's line: input, biased, edge events both ways, kernel debounce.
    pub fn open(
        id: &str,
        chip: Option<&str>,
        line: &LineSpec,
        bias: Bias,
        active_low: bool,
        debounce: Duration,
    ) -> Result<GpioInput, InputError> {
        let (path, offset) = locate(chip, line)?;
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(&path)
            .with_consumer(format!("alertclip:{id}"))
            .with_line(offset)
            .as_input()
            .with_bias(match bias {
                Bias::PullUp => line::Bias::PullUp,
                Bias::PullDown => line::Bias::PullDown,
                Bias::Disabled => line::Bias::Disabled,
            })
            .with_edge_detection(EdgeDetection::BothEdges)
            .with_debounce_period(debounce);
        if active_low {
            builder.as_active_low();
        }
        let request = builder
            .request()
            .map_err(|e| request_error("button", &path, offset, e))?;
        Ok(GpioInput {
            request: AsyncRequest::new(request),
        })
    }
}

impl EdgeSource for GpioInput {
    fn level(&self) -> Result<bool, InputError> {
        let value = self
            .request
            .as_ref()
            .lone_value()
            .map_err(|e| InputError::Lost(e.to_string()))?;
        Ok(value == Value::Active)
    }

    async fn next_edge(&mut self) -> Result<bool, InputError> {
        let event = self
            .request
            .read_edge_event()
            .await
            .map_err(|e| InputError::Lost(e.to_string()))?;
        Ok(event.kind == EdgeKind::Rising)
    }
}

/// A light's line, driven as an output.
pub struct GpioOutput {
    request: gpiocdev::Request,
}

impl GpioOutput {
    /// Requests a light's line as an output, off.
    pub fn open(
        id: &str,
        chip: Option<&str>,
        line: &LineSpec,
        active_low: bool,
    ) -> Result<GpioOutput, InputError> {
        let (path, offset) = locate(chip, line)?;
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(&path)
            .with_consumer(format!("alertclip:{id}"))
            .with_line(offset)
            .as_output(Value::Inactive);
        if active_low {
            builder.as_active_low();
        }
        let request = builder
            .request()
            .map_err(|e| request_error("light", &path, offset, e))?;
        Ok(GpioOutput { request })
    }
}

impl crate::trigger::buttons::light::Light for GpioOutput {
    fn set(&mut self, on: bool) -> Result<(), InputError> {
        let value = if on { Value::Active } else { Value::Inactive };
        self.request
            .set_lone_value(value)
            .map_err(|e| InputError::Lost(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has no GPIO chip: opening says so, clearly, instead of failing obscurely.
    #[test]
    fn a_missing_chip_or_line_gives_a_clear_error() {
        let error = GpioInput::open(
            "b",
            Some("/dev/gpiochip99"),
            &LineSpec::Offset(17),
            Bias::PullUp,
            true,
            Duration::from_millis(30),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            error.contains("/dev/gpiochip99") && error.contains("line 17"),
            "{error}"
        );
        let error = GpioInput::open(
            "b",
            None,
            &LineSpec::Name("GPIO17".into()),
            Bias::PullUp,
            true,
            Duration::from_millis(30),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("no GPIO line named GPIO17"), "{error}");
        let error = GpioOutput::open("l", Some("no-such-label"), &LineSpec::Offset(1), false)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("no GPIO chip no-such-label"), "{error}");
    }
}
