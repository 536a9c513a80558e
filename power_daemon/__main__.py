from power_daemon.cli import main

main(prog_name="power-daemon")
