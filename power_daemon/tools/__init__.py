"""What an admin runs on a node before the daemon: `power-daemon doctor` and `probe`."""
