//! Topic names: the box publishes under one prefix per device, `alertclip/v1/<site_id>` unless
//! its `[mqtt] topic_prefix` says otherwise, and the officer side reads them back through a
//! [`TopicLayout`] built from the same template.
//!
//! ```text
//! <prefix>/status                              retained device status, and the last will
//! <prefix>/alerts                              health alerts
//! <prefix>/events/<event_id>                   the alert
//! <prefix>/events/<event_id>/update/<n>        update n: a trigger that joined the event
//! <prefix>/events/<event_id>/snapshot/<camera> a JPEG
//! <prefix>/events/<event_id>/clip/<camera>     the clip's manifest
//! <prefix>/events/<event_id>/clip/<camera>/<n> chunk n of the clip
//! <prefix>/answers                             the box's answers to commands
//! <prefix>/commands                            commands to the box, from the desk
//! ```

use uuid::Uuid;

/// The prefix template both sides use unless configured otherwise; `{site}` stands for the
/// site id, as one whole topic level.
pub const DEFAULT_PREFIX: &str = "alertclip/v1/{site}";

/// What stands for the site id in a prefix template.
const SITE: &str = "{site}";

/// The default prefix of a site: `alertclip/v1/<site_id>`.
pub fn default_prefix(site: &str) -> String {
    prefix_of(DEFAULT_PREFIX, site)
}

/// A device's prefix from a template: `{site}` replaced by its site id. The same template
/// then configures the box and, with [`TopicLayout`], the receiver.
pub fn prefix_of(template: &str, site: &str) -> String {
    template.replace(SITE, site)
}

/// The topics of one device, under its prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// `<prefix>/status`: retained device status, and the last will.
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `<prefix>/alerts`: health alerts.
    pub fn health(&self) -> String {
        format!("{}/alerts", self.prefix)
    }

    /// `<prefix>/commands`: what the officer side sends the box ([`crate::command`]).
    pub fn commands(&self) -> String {
        format!("{}/commands", self.prefix)
    }

    /// `<prefix>/answers`: the box's answer to each command it heard.
    pub fn answers(&self) -> String {
        format!("{}/answers", self.prefix)
    }

    /// `<prefix>/events/<event_id>`: the alert.
    pub fn alert(&self, event: Uuid) -> String {
        format!("{}/events/{event}", self.prefix)
    }

    /// `<prefix>/events/<event_id>/update/<n>`: the event's update `n` (1, 2 ...).
    pub fn update(&self, event: Uuid, n: u32) -> String {
        format!("{}/events/{event}/update/{n}", self.prefix)
    }

    /// `<prefix>/events/<event_id>/snapshot/<camera>`: a JPEG.
    pub fn snapshot(&self, event: Uuid, camera: &str) -> String {
        format!("{}/events/{event}/snapshot/{camera}", self.prefix)
    }

    /// `<prefix>/events/<event_id>/clip/<camera>`: the manifest; chunk `n` is at
    /// `<that>/<n>`.
    pub fn clip(&self, event: Uuid, camera: &str) -> String {
        format!("{}/events/{event}/clip/{camera}", self.prefix)
    }
}

/// What a device's topic carries, as the officer side reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    /// `<prefix>/status`
    Status {
        /// The device's site id.
        site: String,
    },
    /// `<prefix>/alerts`
    Health {
        /// The device's site id.
        site: String,
    },
    /// `<prefix>/answers`
    Answer {
        /// The device's site id.
        site: String,
    },
    /// `<prefix>/events/<event>`
    Alert {
        /// The device's site id.
        site: String,
        /// The event.
        event: Uuid,
    },
    /// `<prefix>/events/<event>/update/<n>`
    Update {
        /// The device's site id.
        site: String,
        /// The event.
        event: Uuid,
        /// The update's number in its event.
        number: u32,
    },
    /// `<prefix>/events/<event>/snapshot/<camera>`
    Snapshot {
        /// The device's site id.
        site: String,
        /// The event.
        event: Uuid,
        /// The camera, as the topic names it (not yet checked to be a safe name).
        camera: String,
    },
    /// `<prefix>/events/<event>/clip/<camera>`
    Manifest {
        /// The device's site id.
        site: String,
        /// The event.
        event: Uuid,
        /// The camera, as the topic names it.
        camera: String,
    },
    /// `<prefix>/events/<event>/clip/<camera>/<n>`
    Chunk {
        /// The device's site id.
        site: String,
        /// The event.
        event: Uuid,
        /// The camera, as the topic names it.
        camera: String,
        /// Which chunk.
        index: u32,
    },
}

/// One level of a prefix template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Site,
}

/// How the officer side finds the devices' topics: a prefix template (the box's
/// `topic_prefix`, with `{site}` where the site id stands) and the sites it listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    levels: Vec<Level>,
    /// One site, or every site (`None`).
    site: Option<String>,
}

impl Default for TopicLayout {
    /// Every site under the default prefix.
    fn default() -> TopicLayout {
        TopicLayout {
            levels: vec![
                Level::Literal("alertclip".into()),
                Level::Literal("v1".into()),
                Level::Site,
            ],
            site: None,
        }
    }
}

impl TopicLayout {
    /// The layout of `template` (such as `alertclip/v1/{site}` or `acme/stores/{site}`),
    /// listening to one `site`, or to every site when `site` is `None`. A template without
    /// `{site}` names one device's prefix exactly, so it needs the site it belongs to.
    pub fn new(template: &str, site: Option<&str>) -> Result<TopicLayout, String> {
        if template.is_empty() || template.ends_with('/') || template.starts_with('/') {
            return Err(format!(
                "expected topic levels separated by '/', such as \"{DEFAULT_PREFIX}\", found \"{template}\""
            ));
        }
        let mut levels = Vec::new();
        for level in template.split('/') {
            if level == SITE {
                if levels.contains(&Level::Site) {
                    return Err(format!("\"{template}\" names {SITE} twice"));
                }
                levels.push(Level::Site);
            } else if level.is_empty() || level.contains(['+', '#', '{', '}']) {
                return Err(format!(
                    "level \"{level}\" of \"{template}\": expected plain text or {SITE} (no empty levels, '+', '#' or braces)"
                ));
            } else {
                levels.push(Level::Literal(level.to_owned()));
            }
        }
        if let Some(site) = site {
            crate::id::check(site).map_err(|e| format!("site: {e}"))?;
        } else if !levels.contains(&Level::Site) {
            return Err(format!(
                "\"{template}\" has no {SITE} level, so it is one device's prefix: name its site"
            ));
        }
        Ok(TopicLayout {
            levels,
            site: site.map(str::to_owned),
        })
    }

    /// The prefix, with the site level as a `+` wildcard when listening to every site.
    fn prefix_filter(&self) -> String {
        let levels: Vec<&str> = self
            .levels
            .iter()
            .map(|level| match (level, &self.site) {
                (Level::Literal(text), _) => text.as_str(),
                (Level::Site, Some(site)) => site.as_str(),
                (Level::Site, None) => "+",
            })
            .collect();
        levels.join("/")
    }

    /// What to subscribe to for the small, urgent messages: alerts, event updates, health
    /// alerts, the status and answers to commands. A receiver takes these on a session of
    /// their own, so that they never wait behind a backlog of video on another.
    pub fn link_filters(&self) -> [String; 5] {
        let prefix = self.prefix_filter();
        [
            format!("{prefix}/events/+"),
            format!("{prefix}/events/+/update/+"),
            format!("{prefix}/alerts"),
            format!("{prefix}/status"),
            format!("{prefix}/answers"),
        ]
    }

    /// What to subscribe to for media: snapshots, clip chunks and manifests.
    pub fn media_filters(&self) -> [String; 3] {
        let prefix = self.prefix_filter();
        [
            format!("{prefix}/events/+/snapshot/+"),
            format!("{prefix}/events/+/clip/+"),
            format!("{prefix}/events/+/clip/+/+"),
        ]
    }

    /// The one filter a receiver once took everything from an event on: a session that still
    /// holds it is unsubscribed, so media stop coming on the urgent session.
    pub fn legacy_event_filter(&self) -> String {
        format!("{}/events/#", self.prefix_filter())
    }

    /// Reads a topic of this layout; `None` for anything else, including a site level that
    /// is not a valid id.
    pub fn parse(&self, topic: &str) -> Option<TopicKind> {
        let mut parts = topic.split('/');
        let mut site = self.site.clone();
        for level in &self.levels {
            let got = parts.next()?;
            match level {
                Level::Literal(text) if text == got => {}
                Level::Literal(_) => return None,
                Level::Site => match &self.site {
                    Some(wanted) if wanted == got => {}
                    Some(_) => return None,
                    None if crate::id::is_valid(got) => site = Some(got.to_owned()),
                    None => return None,
                },
            }
        }
        let site = site?;
        let rest: Vec<&str> = parts.collect();
        let event = || rest.get(1).and_then(|e| Uuid::parse_str(e).ok());
        Some(match rest.as_slice() {
            ["status"] => TopicKind::Status { site },
            ["alerts"] => TopicKind::Health { site },
            ["answers"] => TopicKind::Answer { site },
            ["events", _] => TopicKind::Alert {
                site,
                event: event()?,
            },
            ["events", _, "update", number] => TopicKind::Update {
                site,
                event: event()?,
                number: number.parse().ok().filter(|n| *n > 0)?,
            },
            ["events", _, "snapshot", camera] => TopicKind::Snapshot {
                site,
                event: event()?,
                camera: (*camera).to_owned(),
            },
            ["events", _, "clip", camera] => TopicKind::Manifest {
                site,
                event: event()?,
                camera: (*camera).to_owned(),
            },
            ["events", _, "clip", camera, index] => TopicKind::Chunk {
                site,
                event: event()?,
                camera: (*camera).to_owned(),
                index: index.parse().ok()?,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_box_publishes_its_layout_reads_back() {
        let event = Uuid::now_v7();
        for (prefix, layout, filter) in [
            (
                default_prefix("corner-12"),
                TopicLayout::default(),
                "alertclip/v1/+",
            ),
            (
                "acme/stores/corner-12".to_owned(),
                TopicLayout::new("acme/stores/{site}", None).unwrap(),
                "acme/stores/+",
            ),
            (
                "acme/corner".to_owned(),
                TopicLayout::new("acme/corner", Some("corner-12")).unwrap(),
                "acme/corner",
            ),
        ] {
            let topics = Topics::new(&prefix);
            let site = "corner-12".to_owned();
            assert_eq!(
                layout.parse(&topics.alert(event)),
                Some(TopicKind::Alert {
                    site: site.clone(),
                    event
                }),
                "{prefix}"
            );
            assert_eq!(
                layout.parse(&format!("{}/7", topics.clip(event, "cam"))),
                Some(TopicKind::Chunk {
                    site: site.clone(),
                    event,
                    camera: "cam".into(),
                    index: 7
                })
            );
            assert_eq!(
                layout.parse(&topics.update(event, 3)),
                Some(TopicKind::Update {
                    site: site.clone(),
                    event,
                    number: 3
                })
            );
            assert_eq!(
                layout.parse(&topics.status()),
                Some(TopicKind::Status { site: site.clone() })
            );
            assert_eq!(
                layout.link_filters(),
                [
                    format!("{filter}/events/+"),
                    format!("{filter}/events/+/update/+"),
                    format!("{filter}/alerts"),
                    format!("{filter}/status"),
                    format!("{filter}/answers")
                ]
            );
            assert_eq!(
                layout.parse(&topics.answers()),
                Some(TopicKind::Answer { site: site.clone() })
            );
            // Commands go the other way: the officer side publishes them, never reads them.
            assert_eq!(layout.parse(&topics.commands()), None);
            assert_eq!(
                layout.media_filters(),
                [
                    format!("{filter}/events/+/snapshot/+"),
                    format!("{filter}/events/+/clip/+"),
                    format!("{filter}/events/+/clip/+/+")
                ]
            );
        }
        assert_eq!(default_prefix("s"), "alertclip/v1/s");
    }

    #[test]
    fn a_layout_refuses_other_topics_and_unsafe_sites() {
        let layout = TopicLayout::default();
        let event = Uuid::now_v7();
        assert_eq!(
            layout.parse(&format!("alertclip/v1/../events/{event}")),
            None
        );
        assert_eq!(layout.parse(&format!("other/v1/s/events/{event}")), None);
        assert_eq!(layout.parse("alertclip/v1/s/events/not-a-uuid"), None);
        for number in ["0", "-1", "x", "4294967296"] {
            assert_eq!(
                layout.parse(&format!("alertclip/v1/s/events/{event}/update/{number}")),
                None
            );
        }
        let one = TopicLayout::new(DEFAULT_PREFIX, Some("a")).unwrap();
        assert_eq!(one.parse(&format!("alertclip/v1/b/events/{event}")), None);
        assert_eq!(one.link_filters()[0], "alertclip/v1/a/events/+");
        assert_eq!(one.legacy_event_filter(), "alertclip/v1/a/events/#");
        assert!(TopicLayout::new("acme/corner", None).is_err());
        assert!(TopicLayout::new("acme/+/x", None).is_err());
        assert!(TopicLayout::new("acme//{site}", None).is_err());
        assert!(TopicLayout::new("{site}/{site}", None).is_err());
        assert!(TopicLayout::new(DEFAULT_PREFIX, Some("a/b")).is_err());
    }
}
