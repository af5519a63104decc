//! What turns detections into a trigger: minimum size, zones, persistence over several frames
//! (N of the last M), and a cooldown per zone.
//!
//! A detection belongs to the first zone that holds the bottom centre of its box (where a
//! standing person's feet are, so a person behind a counter is placed on the floor they stand
//! on, not the shelf behind them). Without zones the whole picture is one zone.

use crate::clock::MonoNs;
use crate::config::detect::CameraDetect;

use super::Detection;
use super::yolox::Found;

/// A zone as the rules use it.
#[derive(Debug, Clone)]
struct Area {
    name: Option<String>,
    polygon: Vec<(f32, f32)>,
}

impl Area {
    fn contains(&self, (x, y): (f32, f32)) -> bool {
        if self.polygon.is_empty() {
            return true;
        }
        // Even-odd ray casting.
        let mut inside = false;
        let n = self.polygon.len();
        for i in 0..n {
            let (xi, yi) = self.polygon[i];
            let (xj, yj) = self.polygon[(i + n - 1) % n];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
        }
        inside
    }
}

/// One camera's rules and what they remember between frames.
#[derive(Debug)]
pub struct Rules {
    areas: Vec<Area>,
    min_area: f32,
    min_frames: u32,
    window_mask: u64,
    cooldown_ns: u64,
    /// Per area: bit 0 is the latest frame, set when the area held a detection.
    history: Vec<u64>,
    last_fired: Vec<Option<MonoNs>>,
    /// The latest frame's detections, reused for frames the motion gate skipped.
    latest: Vec<Detection>,
}

impl Rules {
    /// The rules of one `[camera.detect]` table.
    pub fn new(config: &CameraDetect) -> Rules {
        let areas: Vec<Area> = if config.zones.is_empty() {
            vec![Area {
                name: None,
                polygon: Vec::new(),
            }]
        } else {
            config
                .zones
                .iter()
                .map(|z| Area {
                    name: Some(z.name.clone()),
                    polygon: z
                        .polygon
                        .iter()
                        .map(|[x, y]| (*x as f32, *y as f32))
                        .collect(),
                })
                .collect()
        };
        let window = config.window.clamp(1, 64);
        Rules {
            history: vec![0; areas.len()],
            last_fired: vec![None; areas.len()],
            areas,
            min_area: config.min_area as f32,
            min_frames: config.min_frames,
            window_mask: if window == 64 {
                u64::MAX
            } else {
                (1u64 << window) - 1
            },
            cooldown_ns: config.cooldown.0.as_nanos() as u64,
            latest: Vec::new(),
        }
    }

    /// Takes one looked-at frame's detections (already filtered by class and score; `classes`
    /// names them) and returns the detections to trigger with, if the frame completes a
    /// trigger in some zone.
    pub fn observe(
        &mut self,
        found: &[Found],
        classes: &[String],
        now: MonoNs,
    ) -> Option<Vec<Detection>> {
        self.latest.clear();
        for f in found {
            if f.rect.area() < self.min_area {
                continue;
            }
            let Some(area) = self
                .areas
                .iter()
                .find(|a| a.contains(f.rect.bottom_centre()))
            else {
                continue;
            };
            self.latest.push(Detection {
                label: classes
                    .get(f.class)
                    .cloned()
                    .unwrap_or_else(|| f.class.to_string()),
                score: f.score,
                rect: f.rect,
                zone: area.name.clone(),
            });
        }
        self.advance(now)
    }

    /// Takes a frame the motion gate skipped: the picture has not changed, so what was seen
    /// last is still there.
    pub fn observe_unchanged(&mut self, now: MonoNs) -> Option<Vec<Detection>> {
        self.advance(now)
    }

    /// Forgets the history, as after a gap in watching (outside the schedule, a reconnect).
    pub fn reset(&mut self) {
        self.history.iter_mut().for_each(|h| *h = 0);
        self.latest.clear();
    }

    fn advance(&mut self, now: MonoNs) -> Option<Vec<Detection>> {
        let mut firing: Option<Vec<Detection>> = None;
        for (i, area) in self.areas.iter().enumerate() {
            let seen = self.latest.iter().any(|d| d.zone == area.name);
            self.history[i] = ((self.history[i] << 1) | seen as u64) & self.window_mask;
            if !seen || self.history[i].count_ones() < self.min_frames {
                continue;
            }
            if self.last_fired[i].is_some_and(|t| now.saturating_sub(t) < self.cooldown_ns) {
                continue;
            }
            self.last_fired[i] = Some(now);
            firing
                .get_or_insert_with(Vec::new)
                .extend(self.latest.iter().filter(|d| d.zone == area.name).cloned());
        }
        firing
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::HumanDuration;
    use crate::config::detect::Zone;
    use crate::detect::Rect;

    const SECOND: u64 = 1_000_000_000;

    fn config(zones: Vec<Zone>, min_frames: u32, window: u32, cooldown: u64) -> CameraDetect {
        let mut config: CameraDetect = toml::from_str("").expect("defaults");
        config.zones = zones;
        config.min_frames = min_frames;
        config.window = window;
        config.cooldown = HumanDuration(Duration::from_secs(cooldown));
        config
    }

    fn person(x0: f32, y0: f32, x1: f32, y1: f32) -> Found {
        Found {
            class: 0,
            score: 0.9,
            rect: Rect { x0, y0, x1, y1 },
        }
    }

    fn classes() -> Vec<String> {
        vec!["person".into()]
    }

    #[test]
    fn persistence_needs_n_of_the_last_m_frames() {
        let mut rules = Rules::new(&config(Vec::new(), 2, 3, 60));
        let p = [person(0.1, 0.1, 0.4, 0.9)];
        assert!(rules.observe(&p, &classes(), 0).is_none());
        assert!(rules.observe(&[], &classes(), SECOND).is_none());
        assert!(rules.observe(&[], &classes(), 2 * SECOND).is_none());
        // The first sighting has left the window of 3.
        assert!(rules.observe(&p, &classes(), 3 * SECOND).is_none());
        let fired = rules.observe(&p, &classes(), 4 * SECOND).expect("2 of 3");
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].zone, None);
        assert_eq!(fired[0].label, "person");
    }

    #[test]
    fn cooldown_is_per_zone() {
        let zones = vec![
            Zone {
                name: "door".into(),
                polygon: vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
            },
            Zone {
                name: "stock".into(),
                polygon: vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]],
            },
        ];
        let mut rules = Rules::new(&config(zones, 1, 1, 60));
        let left = [person(0.1, 0.1, 0.3, 0.9)];
        let right = [person(0.6, 0.1, 0.9, 0.9)];
        let fired = rules.observe(&left, &classes(), 0).expect("fires at once");
        assert_eq!(fired[0].zone.as_deref(), Some("door"));
        assert!(
            rules.observe(&left, &classes(), 30 * SECOND).is_none(),
            "cooling down"
        );
        let fired = rules
            .observe(&right, &classes(), 31 * SECOND)
            .expect("other zone");
        assert_eq!(fired[0].zone.as_deref(), Some("stock"));
        assert!(
            rules.observe(&left, &classes(), 60 * SECOND).is_some(),
            "cooled down"
        );
    }

    #[test]
    fn a_detection_counts_where_its_feet_are() {
        // A triangle covering the bottom-left corner.
        let zones = vec![Zone {
            name: "floor".into(),
            polygon: vec![[0.0, 0.5], [0.5, 1.0], [0.0, 1.0]],
        }];
        let mut rules = Rules::new(&config(zones, 1, 1, 0));
        // Head inside the triangle's bounding box, feet outside the triangle.
        assert!(
            rules
                .observe(&[person(0.3, 0.1, 0.5, 0.6)], &classes(), 0)
                .is_none()
        );
        // Feet at (0.15, 0.95): inside.
        assert!(
            rules
                .observe(&[person(0.1, 0.2, 0.2, 0.95)], &classes(), SECOND)
                .is_some()
        );
    }

    #[test]
    fn small_boxes_do_not_count() {
        let mut c = config(Vec::new(), 1, 1, 0);
        c.min_area = 0.05;
        let mut rules = Rules::new(&c);
        assert!(
            rules
                .observe(&[person(0.1, 0.1, 0.2, 0.2)], &classes(), 0)
                .is_none()
        );
        assert!(
            rules
                .observe(&[person(0.1, 0.1, 0.4, 0.4)], &classes(), SECOND)
                .is_some()
        );
    }

    #[test]
    fn skipped_frames_repeat_the_last_result() {
        let mut rules = Rules::new(&config(Vec::new(), 3, 3, 60));
        assert!(
            rules
                .observe(&[person(0.1, 0.1, 0.4, 0.9)], &classes(), 0)
                .is_none()
        );
        assert!(rules.observe_unchanged(SECOND).is_none());
        assert!(rules.observe_unchanged(2 * SECOND).is_some());
        rules.reset();
        assert!(rules.observe_unchanged(3 * SECOND).is_none());
    }
}
