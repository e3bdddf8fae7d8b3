// The virtio spec as pure code (see files in this directory).
