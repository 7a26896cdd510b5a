// File formats: .npy, .safetensors, .png.
