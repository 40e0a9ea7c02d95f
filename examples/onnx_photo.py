"""Classify a photo with an fmnist ONNX export and plain ONNX Runtime: no fmnist needed.

    python onnx_photo.py export/model.onnx boot.jpg

`fmnist export` writes prepare_photo.py (numpy + Pillow) next to model.onnx; the graph
takes the prepared uint8 image and returns calibrated probabilities.
"""

import json
import sys
from pathlib import Path

import onnxruntime

model, photo = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, str(model.parent))  # prepare_photo.py sits next to the model
from prepare_photo import prepare_photo

session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
class_names = json.loads(session.get_modelmeta().custom_metadata_map["fmnist.class_names"])
image = prepare_photo(photo)  # uint8 (28, 28): light garment on black, as in the dataset
probabilities, logits = session.run(["probabilities", "logits"], {"images": image[None]})
best = int(probabilities[0].argmax())
print(f"{class_names[best]} {probabilities[0][best]:.4f}")
