// The web page of `fmnist serve`: send a photo or a drawing to /v1/predict and show the
// 28x28 image the model saw with a top-5 bar chart. Plain JavaScript, no external files.
"use strict";

const TOP_K = 5;
const elements = Object.fromEntries(
  ["model-info", "drop-zone", "file-input", "canvas", "brush", "clear", "predict-drawing", "status", "error",
   "result", "result-label", "result-probability", "preview", "bars", "warnings"].map((id) => [id, document.getElementById(id)])
);

// A server started with --token: open the page as /#token=TOKEN. The token stays in this
// tab (sessionStorage) and leaves the address bar, so it is not bookmarked or shared.
const fragment = new URLSearchParams(window.location.hash.slice(1));
if (fragment.has("token")) {
  sessionStorage.setItem("fmnist-token", fragment.get("token"));
  history.replaceState(null, "", window.location.pathname + window.location.search);
}
const token = sessionStorage.getItem("fmnist-token");
const authorization = token ? { Authorization: `Bearer ${token}` } : {};

function showError(message) {
  elements.error.textContent = message;
  elements.error.hidden = false;
  elements.status.textContent = "";
  // The previous answer belongs to another image: do not leave it under the error.
  elements.result.hidden = true;
  elements["result-label"].textContent = "";
  elements["result-probability"].textContent = "";
  elements.preview.removeAttribute("src");
  elements.bars.replaceChildren();
  elements.warnings.replaceChildren();
}

function showResult(prediction) {
  elements.error.hidden = true;
  elements.status.textContent = "";
  elements["result-label"].textContent = prediction.label;
  elements["result-probability"].textContent = `${(prediction.probability * 100).toFixed(1)}%`;
  elements.preview.src = prediction.image;
  elements.bars.replaceChildren(
    ...prediction.top_k.map((entry) => {
      const row = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = entry.label;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = `${(entry.probability * 100).toFixed(1)}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = `${(entry.probability * 100).toFixed(1)}%`;
      row.append(name, track, value);
      return row;
    })
  );
  elements.warnings.replaceChildren(
    ...(prediction.warnings || []).map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    })
  );
  elements.result.hidden = false;
}

async function classify(blob, filename) {
  const form = new FormData();
  form.append("file", blob, filename);
  elements.status.textContent = "Classifying…";
  elements.error.hidden = true;
  try {
    const response = await fetch(`/v1/predict?preview=true&top_k=${TOP_K}`, {
      method: "POST",
      body: form,
      headers: authorization,
    });
    const document_ = await response.json();
    if (!response.ok) {
      showError(`${document_.error}${document_.fix ? ` (${document_.fix})` : ""}`);
      return;
    }
    showResult(document_.predictions[0]);
  } catch (error) {
    showError(`The server did not answer: ${error.message}`);
  }
}

// Photos: the file picker and drag-and-drop.
elements["file-input"].addEventListener("change", () => {
  const file = elements["file-input"].files[0];
  if (file) classify(file, file.name);
});
for (const name of ["dragenter", "dragover"]) {
  elements["drop-zone"].addEventListener(name, (event) => {
    event.preventDefault();
    elements["drop-zone"].classList.add("dragging");
  });
}
for (const name of ["dragleave", "drop"]) {
  elements["drop-zone"].addEventListener(name, () => elements["drop-zone"].classList.remove("dragging"));
}
elements["drop-zone"].addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) classify(file, file.name);
});

// Drawing: black strokes on a white canvas, sent as a PNG and treated like a photo.
const context = elements.canvas.getContext("2d");
function clearCanvas() {
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, elements.canvas.width, elements.canvas.height);
}
clearCanvas();
let drawing = false;
let last = null;
function point(event) {
  const box = elements.canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * elements.canvas.width) / box.width,
    y: ((event.clientY - box.top) * elements.canvas.height) / box.height,
  };
}
elements.canvas.addEventListener("pointerdown", (event) => {
  drawing = true;
  last = point(event);
  elements.canvas.setPointerCapture(event.pointerId);
});
elements.canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const next = point(event);
  context.strokeStyle = "#000000";
  context.lineWidth = Number(elements.brush.value);
  context.lineCap = "round";
  context.lineJoin = "round";
  context.beginPath();
  context.moveTo(last.x, last.y);
  context.lineTo(next.x, next.y);
  context.stroke();
  last = next;
});
for (const name of ["pointerup", "pointercancel"]) {
  elements.canvas.addEventListener(name, () => {
    drawing = false;
  });
}
elements.clear.addEventListener("click", clearCanvas);
elements["predict-drawing"].addEventListener("click", () => {
  elements.canvas.toBlob((blob) => classify(blob, "drawing.png"), "image/png");
});

// Which model answers.
fetch("/v1/model", { headers: authorization })
  .then((response) => {
    if (!response.ok) throw new Error(`status ${response.status}`);
    return response.json();
  })
  .then((info) => {
    // The run's own classes (Fashion-MNIST's ten, or those of the data it was trained on).
    const names = info.class_names.length <= 12 ? `: ${info.class_names.join(", ")}` : "";
    elements["model-info"].textContent = `Model ${info.model} (${info.backend}), ${info.class_names.length} classes${names}.`;
  })
  .catch(() => {
    elements["model-info"].textContent = token
      ? "Model information unavailable."
      : "Model information unavailable (a server started with --token needs /#token=TOKEN).";
  });
