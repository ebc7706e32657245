// llmgate's chat page: talks to this server's OpenAI-compatible API, keeps conversations in
// localStorage, renders model output as Markdown through markdown-it (raw HTML off) and then
// DOMPurify, so an answer can never inject markup or script.
"use strict";

const STORE = "llmgate.chat.v1";
const $ = (id) => document.getElementById(id);

const md = window.markdownit({ html: false, linkify: true, breaks: false });

const state = load();
let running = null; // {controller, convo, message} while an answer streams

function load() {
  const fallback = { conversations: [], current: null, model: "", apiKey: "",
    settings: { system: "", max_tokens: 512, temperature: 0.7, top_p: 1 } };
  try {
    const saved = JSON.parse(localStorage.getItem(STORE) || "null");
    return saved ? { ...fallback, ...saved, settings: { ...fallback.settings, ...saved.settings } } : fallback;
  } catch {
    return fallback;
  }
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(state));
}

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

function currentConversation() {
  let convo = state.conversations.find((c) => c.id === state.current);
  if (!convo) {
    convo = { id: newId(), title: "New chat", messages: [] };
    state.conversations.unshift(convo);
    state.current = convo.id;
  }
  return convo;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.apiKey) h.Authorization = `Bearer ${state.apiKey}`;
  return h;
}

async function errorText(reply) {
  try {
    const body = await reply.json();
    if (body && body.error && body.error.message) return `${reply.status}: ${body.error.message}`;
  } catch { /* not JSON */ }
  return `${reply.status} ${reply.statusText}`;
}

// -- models ----------------------------------------------------------------------------------

function isChatModel(card) {
  // Cards that list their endpoints say whether they chat; others are chat models.
  return !Array.isArray(card.endpoints) || card.endpoints.some((e) => e.includes("chat"));
}

async function loadModels() {
  const select = $("model");
  setStatus("Loading models…");
  let reply;
  try {
    reply = await fetch("v1/models", { headers: headers() });
  } catch (err) {
    setStatus(`Server unreachable: ${err.message}`);
    return;
  }
  if (reply.status === 401) {
    $("api-key-row").hidden = false;
    setStatus(state.apiKey ? "That API key was refused" : "This server needs an API key");
    select.replaceChildren();
    return;
  }
  if (!reply.ok) {
    setStatus(await errorText(reply));
    return;
  }
  const cards = (await reply.json()).data.filter(isChatModel);
  select.replaceChildren(...cards.map((card) => {
    const option = document.createElement("option");
    option.value = card.id;
    option.textContent = card.aliases && card.aliases.length ? `${card.id} (${card.aliases.join(", ")})` : card.id;
    return option;
  }));
  if (cards.some((c) => c.id === state.model)) select.value = state.model;
  state.model = select.value;
  save();
  setStatus(cards.length ? "" : "No chat models are configured");
}

function setStatus(text) {
  $("status").textContent = text;
}

// -- rendering -------------------------------------------------------------------------------

function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(md.render(text));
  for (const pre of element.querySelectorAll("pre")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy code");
    button.addEventListener("click", () => copy(pre.querySelector("code")?.innerText ?? pre.innerText, button));
    pre.appendChild(button);
  }
  for (const link of element.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1200);
}

function actionButton(label, aria, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.setAttribute("aria-label", aria);
  button.addEventListener("click", onClick);
  return button;
}

function formatStats(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.tokens != null) parts.push(`${stats.tokens} tokens`);
  if (stats.ttft != null) parts.push(`first token ${(stats.ttft / 1000).toFixed(2)} s`);
  if (stats.rate != null) parts.push(`${stats.rate.toFixed(1)} tok/s`);
  return parts.join(" · ");
}

function messageElement(convo, message, index) {
  const wrapper = document.createElement("article");
  wrapper.className = `message ${message.role}`;
  wrapper.dataset.index = String(index);
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = message.role === "assistant" ? (message.model || "assistant") : message.role;
  wrapper.appendChild(role);

  if (message.reasoning) {
    const details = document.createElement("details");
    details.className = "reasoning";
    const summary = document.createElement("summary");
    summary.textContent = "Reasoning";
    const thinking = document.createElement("div");
    thinking.className = "thinking";
    thinking.textContent = message.reasoning;
    details.append(summary, thinking);
    wrapper.appendChild(details);
  }

  const body = document.createElement("div");
  body.className = "body";
  if (message.role === "assistant") renderMarkdown(body, message.content || "");
  else body.textContent = message.content;
  wrapper.appendChild(body);

  const isLast = index === convo.messages.length - 1;
  const actions = document.createElement("div");
  actions.className = "actions";
  if (message.role === "assistant") {
    if (message.stopped || message.cut) {
      const note = document.createElement("span");
      note.className = "stopped";
      note.textContent = message.stopped ? "stopped" : "cut at max tokens";
      actions.appendChild(note);
    }
    actions.appendChild(actionButton("Copy", "Copy answer", (e) => copy(message.content || "", e.currentTarget)));
    if (isLast && !running) actions.appendChild(actionButton("Regenerate", "Regenerate answer", regenerate));
    const stats = document.createElement("span");
    stats.className = "stats";
    stats.textContent = formatStats(message.stats);
    actions.appendChild(stats);
  } else if (message.role === "user" && !running && index === lastUserIndex(convo)) {
    actions.appendChild(actionButton("Edit", "Edit and resend this message", () => editLast(convo)));
  }
  if (actions.childElementCount) wrapper.appendChild(actions);
  return wrapper;
}

function lastUserIndex(convo) {
  for (let i = convo.messages.length - 1; i >= 0; i--) if (convo.messages[i].role === "user") return i;
  return -1;
}

function render() {
  const convo = currentConversation();
  const list = $("conversation-list");
  list.replaceChildren(...state.conversations.map((c) => {
    const item = document.createElement("li");
    if (c.id === convo.id) item.className = "active";
    const open = actionButton(c.title || "New chat", `Open conversation: ${c.title || "New chat"}`, () => {
      if (running) return;
      state.current = c.id;
      save();
      closeSidebar();
      render();
    });
    open.className = "open";
    const remove = actionButton("✕", `Delete conversation: ${c.title || "New chat"}`, () => deleteConversation(c.id));
    remove.className = "delete";
    item.append(open, remove);
    return item;
  }));

  const messages = $("messages");
  const nodes = convo.messages.map((m, i) => messageElement(convo, m, i));
  $("empty").hidden = nodes.length > 0;
  messages.replaceChildren($("empty"), ...nodes);
  messages.scrollTop = messages.scrollHeight;
  $("send").hidden = Boolean(running);
  $("stop").hidden = !running;
}

function deleteConversation(id) {
  if (running && running.convo.id === id) return;
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.current === id) state.current = state.conversations[0]?.id ?? null;
  save();
  render();
}

// -- sending ---------------------------------------------------------------------------------

function requestMessages(convo) {
  const out = [];
  if (state.settings.system.trim()) out.push({ role: "system", content: state.settings.system });
  for (const m of convo.messages) {
    if (m.role === "user" || (m.role === "assistant" && m.content)) out.push({ role: m.role, content: m.content });
  }
  return out;
}

async function send(text) {
  const convo = currentConversation();
  if (text) {
    convo.messages.push({ role: "user", content: text });
    if (convo.title === "New chat") convo.title = text.slice(0, 48);
  }
  convo.messages = convo.messages.filter((m) => m.role !== "error");
  await answer(convo);
}

async function answer(convo) {
  const model = $("model").value;
  if (!model) {
    showError(convo, "No model selected");
    return;
  }
  const message = { role: "assistant", content: "", reasoning: "", model, stats: null };
  const controller = new AbortController();
  const body = {
    model,
    messages: requestMessages(convo),
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number(state.settings.max_tokens),
    temperature: Number(state.settings.temperature),
    top_p: Number(state.settings.top_p),
  };
  running = { controller, convo, message };
  convo.messages.push(message);
  save();
  render();
  const started = performance.now();
  let first = null;
  let last = null;
  let usage = null;
  const element = $("messages").lastElementChild;
  const bodyElement = element.querySelector(".body");
  bodyElement.classList.add("cursor");
  let pending = false;
  const repaint = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      renderMarkdown(bodyElement, message.content);
      bodyElement.classList.add("cursor");
      let details = element.querySelector("details.reasoning");
      if (message.reasoning && !details) {
        details = document.createElement("details");
        details.className = "reasoning";
        details.innerHTML = "<summary>Reasoning</summary><div class=\"thinking\"></div>";
        element.insertBefore(details, bodyElement);
      }
      if (details) details.querySelector(".thinking").textContent = message.reasoning;
      const messages = $("messages");
      messages.scrollTop = messages.scrollHeight;
    });
  };
  try {
    const reply = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!reply.ok) throw new Error(await errorText(reply));
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of frame.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
          if (chunk.usage) usage = chunk.usage;
          for (const choice of chunk.choices || []) {
            const delta = choice.delta || {};
            const piece = (delta.content || "") + (delta.reasoning_content || "");
            if (piece) {
              last = performance.now();
              if (first === null) first = last;
            }
            if (delta.content) message.content += delta.content;
            if (delta.reasoning_content) message.reasoning += delta.reasoning_content;
            if (choice.finish_reason === "length") message.cut = true;
          }
          repaint();
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      message.stopped = true;
    } else {
      if (!message.content) convo.messages.pop();
      showError(convo, err.message, false);
    }
  } finally {
    running = null;
    const tokens = usage ? usage.completion_tokens : null;
    message.stats = {
      tokens,
      ttft: first !== null ? first - started : null,
      rate: tokens && tokens > 1 && last > first ? ((tokens - 1) * 1000) / (last - first) : null,
    };
    save();
    render();
    $("prompt").focus();
  }
}

function showError(convo, text, rerender = true) {
  convo.messages.push({ role: "error", content: text });
  save();
  if (rerender) render();
}

function regenerate() {
  const convo = currentConversation();
  if (running) return;
  while (convo.messages.length && convo.messages[convo.messages.length - 1].role !== "user") convo.messages.pop();
  if (convo.messages.length) answer(convo);
}

function editLast(convo) {
  const index = lastUserIndex(convo);
  if (index < 0 || running) return;
  const prompt = $("prompt");
  prompt.value = convo.messages[index].content;
  convo.messages = convo.messages.slice(0, index);
  save();
  render();
  autosize();
  prompt.focus();
}

// -- wiring ----------------------------------------------------------------------------------

function autosize() {
  const prompt = $("prompt");
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, window.innerHeight * 0.4)}px`;
}

function closeSidebar() {
  $("app").classList.remove("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}

function bindSetting(id, key, format = (v) => v) {
  const input = $(id);
  const output = $(`${id}-value`);
  input.value = state.settings[key];
  if (output) output.textContent = format(input.value);
  input.addEventListener("input", () => {
    state.settings[key] = input.value;
    if (output) output.textContent = format(input.value);
    save();
  });
}

function init() {
  bindSetting("system-prompt", "system");
  bindSetting("max-tokens", "max_tokens");
  bindSetting("temperature", "temperature");
  bindSetting("top-p", "top_p");
  const key = $("api-key");
  key.value = state.apiKey;
  if (state.apiKey) $("api-key-row").hidden = false;
  key.addEventListener("change", () => {
    state.apiKey = key.value.trim();
    save();
    loadModels();
  });
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    save();
  });
  $("new-chat").addEventListener("click", () => {
    if (running) return;
    const convo = { id: newId(), title: "New chat", messages: [] };
    state.conversations.unshift(convo);
    state.current = convo.id;
    save();
    closeSidebar();
    render();
    $("prompt").focus();
  });
  $("toggle-sidebar").addEventListener("click", (event) => {
    event.stopPropagation();
    const open = $("app").classList.toggle("sidebar-open");
    $("toggle-sidebar").setAttribute("aria-expanded", String(open));
  });
  $("close-sidebar").addEventListener("click", closeSidebar);
  document.querySelector("main.chat").addEventListener("click", () => {
    if ($("app").classList.contains("sidebar-open")) closeSidebar();
  });
  const prompt = $("prompt");
  prompt.addEventListener("input", autosize);
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || running) return;
    prompt.value = "";
    autosize();
    send(text);
  });
  $("stop").addEventListener("click", () => {
    if (running) running.controller.abort();
  });
  render();
  loadModels();
  prompt.focus();
}

document.addEventListener("DOMContentLoaded", init);
