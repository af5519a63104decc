//! The detector's keys: `[detect]` (the runtime and model every watched camera shares) and
//! `[camera.detect]` (what one camera watches for, where and when).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{HumanDuration, SecretUrl};
use crate::config::schedule::Schedule;

/// What `models/fetch.sh` is, for error messages read on a box.
pub const SETUP_HINT: &str = "install the alertclip package, or from a source tree run models/fetch.sh (make setup) and point [detect] runtime and model at what it fetched";

/// Where the alertclip package installs ONNX Runtime.
pub const DEFAULT_RUNTIME: &str = "/usr/lib/alertclip/libonnxruntime.so.1.31.1";
/// Where the alertclip package installs the model.
pub const DEFAULT_MODEL: &str = "/usr/share/alertclip/models/yolox-nano.onnx";

/// The 80 COCO classes in the order YOLOX and most COCO detectors number them.
pub const COCO_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// `[detect]`: the runtime and model shared by every watched camera (docs/detection.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    /// The ONNX Runtime library (1.31.x), loaded at start. Default:
    /// `"/usr/lib/alertclip/libonnxruntime.so.1.31.1"`, where the package installs it.
    #[serde(default = "default_runtime")]
    pub runtime: PathBuf,
    /// A YOLOX-format ONNX model. Default: `"/usr/share/alertclip/models/yolox-nano.onnx"`.
    #[serde(default = "default_model")]
    pub model: PathBuf,
    /// The model's class names, in its output order. Default: the 80 COCO classes.
    #[serde(default = "default_classes")]
    pub classes: Vec<String>,
    /// CPU threads inference may use. Default: 2 (half a Raspberry Pi 4, leaving the rest to
    /// ingest and delivery).
    #[serde(default = "default_threads")]
    pub threads: usize,
}

impl Default for Detect {
    fn default() -> Self {
        Detect {
            runtime: default_runtime(),
            model: default_model(),
            classes: default_classes(),
            threads: default_threads(),
        }
    }
}

/// `[camera.detect]`: what one camera watches for. A camera without it is not watched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraDetect {
    /// The camera's low-resolution substream, decoded for detection instead of the main
    /// stream (same credentials and transport as the camera). Default: the camera's `url`.
    #[serde(default)]
    pub url: Option<SecretUrl>,
    /// Frames per second looked at. Default: 2.
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Class names to report. Default: `["person"]`.
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// Lowest score (objectness x class) that counts: a number for every label, or a table
    /// per label, such as `{ person = 0.6, car = 0.4 }`. Default: 0.5.
    #[serde(default)]
    pub min_score: MinScore,
    /// Smallest box that counts, as a fraction of the picture's area (0.01 = 1 %). Default: 0.
    #[serde(default)]
    pub min_area: f64,
    /// Named areas of the picture; a detection counts where the bottom centre of its box (the
    /// feet of a standing person) falls inside one. Default: none, the whole picture.
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// How many of the last `window` frames must see it before it triggers. Default: 2.
    #[serde(default = "default_min_frames")]
    pub min_frames: u32,
    /// The number of frames `min_frames` counts in. Default: 3.
    #[serde(default = "default_window")]
    pub window: u32,
    /// After a trigger, how long the same zone of this camera stays quiet. Default: `"60s"`.
    #[serde(default = "default_cooldown")]
    pub cooldown: HumanDuration,
    /// When to watch, in the site's time zone, such as `["Mon-Fri 21:00-07:00",
    /// "Sat-Sun 00:00-24:00"]`. Default: always.
    #[serde(default)]
    pub schedule: Schedule,
    /// Skips inference while the picture does not change, to save CPU. Default: true.
    #[serde(default = "default_true")]
    pub motion_gate: bool,
}

/// `min_score`: one threshold, or one per label.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MinScore {
    /// The same for every label.
    All(f64),
    /// Per label; labels not listed use 0.5.
    PerLabel(BTreeMap<String, f64>),
}

impl Default for MinScore {
    fn default() -> Self {
        MinScore::All(DEFAULT_MIN_SCORE)
    }
}

impl MinScore {
    /// The threshold for `label`.
    pub fn for_label(&self, label: &str) -> f64 {
        match self {
            MinScore::All(score) => *score,
            MinScore::PerLabel(scores) => scores.get(label).copied().unwrap_or(DEFAULT_MIN_SCORE),
        }
    }
}

/// One `zones` entry: a named polygon in normalised coordinates (0,0 top left, 1,1 bottom
/// right), so it survives a change of resolution.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Letters, digits, '-', '_' or '.'; reported with each detection. Required.
    pub name: String,
    /// At least three `[x, y]` corners, in order around the area. Required.
    pub polygon: Vec<[f64; 2]>,
}

const DEFAULT_MIN_SCORE: f64 = 0.5;
/// A longer window than this is not persistence but a different rule.
pub const MAX_WINDOW: u32 = 64;

fn default_runtime() -> PathBuf {
    PathBuf::from(DEFAULT_RUNTIME)
}
fn default_model() -> PathBuf {
    PathBuf::from(DEFAULT_MODEL)
}
fn default_classes() -> Vec<String> {
    COCO_CLASSES.iter().map(|c| (*c).to_owned()).collect()
}
fn default_threads() -> usize {
    2
}
fn default_fps() -> f64 {
    2.0
}
fn default_labels() -> Vec<String> {
    vec!["person".to_owned()]
}
fn default_min_frames() -> u32 {
    2
}
fn default_window() -> u32 {
    3
}
fn default_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_true() -> bool {
    true
}

impl Detect {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if self.classes.is_empty() {
            return Err((
                "detect.classes".into(),
                "must list the model's class names in its output order".into(),
            ));
        }
        if let Some(i) =
            (1..self.classes.len()).find(|&i| self.classes[..i].contains(&self.classes[i]))
        {
            return Err((
                format!("detect.classes[{i}]"),
                format!("\"{}\" is listed twice", self.classes[i]),
            ));
        }
        if self.threads == 0 || self.threads > 64 {
            return Err((
                "detect.threads".into(),
                format!("expected 1 to 64, found {}", self.threads),
            ));
        }
        Ok(())
    }
}

impl CameraDetect {
    /// Checks the keys of camera `i` against the shared `[detect]` section.
    pub(super) fn validate(&self, i: usize, detect: &Detect) -> Result<(), (String, String)> {
        let key = |k: &str| format!("camera[{i}].detect.{k}");
        if !(self.fps > 0.0 && self.fps <= 30.0) {
            return Err((
                key("fps"),
                format!("expected more than 0 and at most 30, found {}", self.fps),
            ));
        }
        if self.labels.is_empty() {
            return Err((
                key("labels"),
                "expected at least one label, such as [\"person\"]".into(),
            ));
        }
        for (j, label) in self.labels.iter().enumerate() {
            if !detect.classes.contains(label) {
                return Err((
                    format!("camera[{i}].detect.labels[{j}]"),
                    format!(
                        "\"{label}\" is not one of the model's classes (detect.classes): {}",
                        abbreviated(&detect.classes)
                    ),
                ));
            }
        }
        match &self.min_score {
            MinScore::All(score) => check_score(*score).map_err(|m| (key("min_score"), m))?,
            MinScore::PerLabel(scores) => {
                for (label, score) in scores {
                    if !self.labels.contains(label) {
                        return Err((
                            format!("camera[{i}].detect.min_score.{label}"),
                            format!("\"{label}\" is not in labels"),
                        ));
                    }
                    check_score(*score)
                        .map_err(|m| (format!("camera[{i}].detect.min_score.{label}"), m))?;
                }
            }
        }
        if !(0.0..1.0).contains(&self.min_area) {
            return Err((
                key("min_area"),
                format!(
                    "expected a fraction of the picture from 0 to below 1, found {}",
                    self.min_area
                ),
            ));
        }
        for (j, zone) in self.zones.iter().enumerate() {
            let zkey = |k: &str| format!("camera[{i}].detect.zones[{j}].{k}");
            super::check_id(&zone.name).map_err(|m| (zkey("name"), m))?;
            if self.zones[..j].iter().any(|z| z.name == zone.name) {
                return Err((zkey("name"), format!("duplicate zone \"{}\"", zone.name)));
            }
            if zone.polygon.len() < 3 {
                return Err((
                    zkey("polygon"),
                    format!(
                        "expected at least three [x, y] corners, found {}",
                        zone.polygon.len()
                    ),
                ));
            }
            if let Some([x, y]) = zone
                .polygon
                .iter()
                .find(|[x, y]| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y))
            {
                return Err((
                    zkey("polygon"),
                    format!("corners are fractions of the picture from 0 to 1, found [{x}, {y}]"),
                ));
            }
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            return Err((
                key("window"),
                format!("expected 1 to {MAX_WINDOW} frames, found {}", self.window),
            ));
        }
        if self.min_frames == 0 || self.min_frames > self.window {
            return Err((
                key("min_frames"),
                format!(
                    "expected 1 to window ({}) frames, found {}",
                    self.window, self.min_frames
                ),
            ));
        }
        Ok(())
    }
}

fn check_score(score: f64) -> Result<(), String> {
    if score > 0.0 && score < 1.0 {
        Ok(())
    } else {
        Err(format!("expected a score between 0 and 1, found {score}"))
    }
}

/// The first few names of a long list, for an error message.
fn abbreviated(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
    if names.len() > shown.len() {
        format!("{} ... ({} in all)", shown.join(", "), names.len())
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const CAMERA: &str = "[site]\nid = \"s\"\nname = \"Store\"\n[[camera]]\nid = \"front\"\nurl = \"rtsp://10.0.0.5/1\"\n";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("alertclip.toml")).map_err(|e| e.to_string())
    }

    fn error(detect: &str) -> String {
        parse(&format!("{CAMERA}[camera.detect]\n{detect}\n")).expect_err("should be rejected")
    }

    #[test]
    fn a_bare_detect_table_gets_the_documented_defaults() {
        let config = parse(&format!("{CAMERA}[camera.detect]\n")).unwrap();
        let detect = config.cameras[0].detect.as_ref().unwrap();
        assert_eq!(detect.fps, 2.0);
        assert_eq!(detect.labels, ["person"]);
        assert_eq!(detect.min_score.for_label("person"), 0.5);
        assert_eq!((detect.min_frames, detect.window), (2, 3));
        assert_eq!(detect.cooldown.0, Duration::from_secs(60));
        assert!(detect.schedule.is_always() && detect.motion_gate && detect.url.is_none());
        assert_eq!(config.detect.runtime, Path::new(DEFAULT_RUNTIME));
        assert_eq!(config.detect.model, Path::new(DEFAULT_MODEL));
        assert_eq!(config.detect.classes.len(), 80);
        assert_eq!(config.detect.threads, 2);
        assert!(
            parse(CAMERA).unwrap().cameras[0].detect.is_none(),
            "not watched"
        );
    }

    #[test]
    fn per_label_scores_and_zones_parse() {
        let config = parse(&format!(
            "{CAMERA}[camera.detect]\nlabels = [\"person\", \"car\"]\nmin_score = {{ car = 0.3 }}\n\
             schedule = \"Mon-Fri 21:00-07:00\"\n\
             [[camera.detect.zones]]\nname = \"door\"\npolygon = [[0, 0], [1, 0], [1, 1]]\n"
        ))
        .unwrap();
        let detect = config.cameras[0].detect.as_ref().unwrap();
        assert_eq!(detect.min_score.for_label("car"), 0.3);
        assert_eq!(detect.min_score.for_label("person"), 0.5);
        assert_eq!(detect.zones[0].name, "door");
        assert!(!detect.schedule.is_always());
    }

    #[test]
    fn bad_keys_name_the_key_and_what_was_expected() {
        for (detect, says) in [
            (
                "fps = 0",
                "camera[0].detect.fps: expected more than 0 and at most 30, found 0",
            ),
            (
                "labels = [\"persn\"]",
                "camera[0].detect.labels[0]: \"persn\" is not one of the model's classes",
            ),
            (
                "min_score = 1.5",
                "camera[0].detect.min_score: expected a score between 0 and 1",
            ),
            (
                "min_score = { car = 0.3 }",
                "camera[0].detect.min_score.car: \"car\" is not in labels",
            ),
            (
                "min_frames = 4",
                "camera[0].detect.min_frames: expected 1 to window (3) frames, found 4",
            ),
            (
                "window = 100",
                "camera[0].detect.window: expected 1 to 64 frames",
            ),
            (
                "schedule = [\"Mon-Fry 21:00-07:00\"]",
                "unknown day \"fry\"",
            ),
            (
                "zones = [{ name = \"a\", polygon = [[0, 0], [1, 1]] }]",
                "camera[0].detect.zones[0].polygon: expected at least three",
            ),
            (
                "zones = [{ name = \"a\", polygon = [[0, 0], [2, 1], [1, 1]] }]",
                "corners are fractions of the picture from 0 to 1, found [2, 1]",
            ),
            ("fsp = 2", "unknown field `fsp`"),
        ] {
            let message = error(detect);
            assert!(message.contains(says), "{detect}: {message}");
            assert!(message.starts_with("alertclip.toml: "), "{message}");
        }
        let message =
            parse(&format!("{CAMERA}[camera.detect]\n[detect]\nthreads = 0\n")).unwrap_err();
        assert!(
            message.contains("detect.threads: expected 1 to 64, found 0"),
            "{message}"
        );
        let message = parse(&CAMERA.replace(
            "name = \"Store\"",
            "name = \"Store\"\ntimezone = \"Mars/Olympus\"",
        ))
        .unwrap_err();
        assert!(
            message.contains("site.timezone: unknown time zone \"Mars/Olympus\""),
            "{message}"
        );
    }
}
