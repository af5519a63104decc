// The console's only script: ages that count up, and the live feed (server-sent events;
// each change names an event whose card is fetched again, already rendered and escaped by
// the server). Served by the desk itself; nothing is loaded from elsewhere.
"use strict";

const baseTitle = document.title;
let unseen = 0;
let audio = null;

function age(time) {
  const at = Date.parse(time.getAttribute("datetime"));
  if (Number.isNaN(at)) return;
  const seconds = Math.max(0, Math.round((Date.now() - at) / 1000));
  let ago;
  if (seconds < 60) ago = seconds + " s ago";
  else if (seconds < 3600) ago = Math.floor(seconds / 60) + " min ago";
  else if (seconds < 86400) ago = Math.floor(seconds / 3600) + " h ago";
  else ago = Math.floor(seconds / 86400) + " d ago";
  time.textContent = new Date(at).toLocaleString() + " (" + ago + ")";
}

function ages(root) {
  root.querySelectorAll("time[data-age]").forEach(age);
}

// Browsers let a page make sound only after a person touched it.
function enableSound() {
  if (audio === null && window.AudioContext) audio = new AudioContext();
}

function chime() {
  if (audio === null) return;
  const now = audio.currentTime;
  [0, 0.25].forEach((offset) => {
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.setValueAtTime(0.3, now + offset);
    gain.gain.exponentialRampToValueAtTime(0.001, now + offset + 0.2);
    tone.connect(gain).connect(audio.destination);
    tone.start(now + offset);
    tone.stop(now + offset + 0.2);
  });
}

function announce() {
  if (document.visibilityState === "visible" && document.hasFocus()) return;
  unseen += 1;
  document.title = "(" + unseen + ") New alert · " + baseTitle;
}

// Cards being fetched, by event: a change that comes meanwhile (a clip's chunks come fast)
// asks for one more fetch once this one is done, never one fetch per change.
const fetching = new Map();

function refresh(feed, change) {
  if (change.kind === "alert") {
    chime();
    announce();
  }
  const id = change.event;
  const inFlight = fetching.get(id);
  if (inFlight !== undefined) {
    inFlight.again = true;
    return;
  }
  const entry = { again: false };
  fetching.set(id, entry);
  showCard(feed, id)
    .catch(() => {})
    .finally(() => {
      fetching.delete(id);
      if (entry.again) refresh(feed, { kind: "again", event: id });
    });
}

async function showCard(feed, id) {
  const response = await fetch("/events/" + encodeURIComponent(id) + "/card", {
    credentials: "same-origin",
    headers: { Accept: "text/html" },
  });
  if (response.redirected || response.status === 401) {
    window.location.assign("/login");
    return;
  }
  if (!response.ok) return;
  const holder = document.createElement("div");
  holder.innerHTML = await response.text();
  const card = holder.firstElementChild;
  if (card === null) return;
  ages(card);
  const existing = document.getElementById(card.id);
  if (existing !== null) {
    existing.replaceWith(card);
  } else if (feed !== null) {
    const empty = feed.querySelector(".empty");
    if (empty !== null) empty.remove();
    feed.prepend(card);
    card.classList.add("new");
    // The page shows the newest, as the server renders it: older ones are a reload away.
    while (feed.children.length > 200) feed.lastElementChild.remove();
  }
}

function live(feed) {
  const source = new EventSource("/feed");
  const status = document.querySelector("[data-live]");
  let dropped = false;
  source.addEventListener("open", () => {
    // Changes sent while the feed was down are not sent again: load the page afresh.
    if (dropped) {
      window.location.reload();
      return;
    }
    if (status) {
      status.textContent = "Live: new alerts appear here as they arrive.";
      status.classList.remove("offline");
    }
    document.body.dataset.live = "open";
    // An event's page may have changed between being rendered and the feed opening (the
    // store's box answers a response within moments): fetch its card once now.
    if (feed === null) {
      document.querySelectorAll("article.card[data-event]").forEach((card) => {
        refresh(feed, { kind: "opened", event: card.dataset.event });
      });
    }
  });
  source.addEventListener("error", () => {
    dropped = true;
    // A refusal (the session ended) closes the source for good: sign in again.
    if (source.readyState === EventSource.CLOSED) {
      window.location.assign("/login");
      return;
    }
    if (status) {
      status.textContent = "Reconnecting to the desk…";
      status.classList.add("offline");
    }
    document.body.dataset.live = "reconnecting";
  });
  source.addEventListener("change", (message) => {
    const change = JSON.parse(message.data);
    if (change.event) refresh(feed, change);
  });
  source.addEventListener("reload", () => window.location.reload());
}

document.addEventListener("DOMContentLoaded", () => {
  ages(document);
  setInterval(() => ages(document), 15000);
  document.addEventListener("click", enableSound, { once: true });
  document.addEventListener("keydown", enableSound, { once: true });
  const reset = () => {
    unseen = 0;
    document.title = baseTitle;
  };
  window.addEventListener("focus", reset);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reset();
  });
  // The feed page, and an event's page: its card (with the store's answer to a response)
  // changes as news comes.
  const feed = document.getElementById("feed");
  if (feed !== null || document.querySelector("article.card[data-event]") !== null) live(feed);
});
