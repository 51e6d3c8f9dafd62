from optio_host import Host


async def test_host_runs_a_command(host: Host) -> None:
    result = await host.run(["echo", "hi"])
    assert result.stdout == "hi\n"
    assert result.exit_code == 0
