"""The command states service against a real server's database: the orderings the relay's
timing rarely shows (an answer racing the write of its command's state)."""

from __future__ import annotations

import orjson

from simbridge.config import Settings
from tests.helpers import PairedWorld, paired_world, sim_info_event


async def queue_get_sims(world: PairedWorld) -> str:
    host = world.pair.host
    reply = await world.http.get(
        f"/sims?host_device_id={host.id}&offline=queue", headers=host.owner.headers
    )
    assert reply.json()["status"] == "queued", reply.text
    return str(reply.json()["req_id"])


async def state_of(world: PairedWorld, req_id: str) -> dict[str, object]:
    reply = await world.http.get(f"/commands/{req_id}", headers=world.pair.host.owner.headers)
    assert reply.status_code == 200, reply.text
    state: dict[str, object] = reply.json()
    return state


async def test_an_answer_stored_before_its_queued_command_is_marked_sent_still_counts(
    settings: Settings,
) -> None:
    """The host answers a queued command the moment it is written, and that answer reaches
    the database before the command's `sent`: the command is `answered` all the same."""
    async with paired_world(settings) as world:
        commands, writer = world.live.runtime.commands, world.live.runtime.writer
        host_id = world.pair.host.id
        req_id = await queue_get_sims(world)
        answer = orjson.dumps(sim_info_event(req_id)).decode()
        async with commands.queue_of(host_id) as queued:
            assert [command.req_id for command in queued] == [req_id]
            await commands.answered(host_id, req_id, answer)
            await writer.flush()  # whatever the answer wrote is in the database now
            await commands.sent(queued)
        state = await state_of(world, req_id)
        assert (state["state"], state["answer"]) == ("answered", sim_info_event(req_id))


async def test_an_answer_during_a_hand_over_is_written_with_the_command(
    settings: Settings,
) -> None:
    async with paired_world(settings) as world:
        commands = world.live.runtime.commands
        host = world.pair.host
        answer = orjson.dumps(sim_info_event("fast")).decode()
        commands.handing_over(host.id, "fast")
        await commands.answered(host.id, "fast", answer)
        await commands.handed_over("fast", host.owner.user_id, host.id, None, "GET_SIMS", True)
        state = await state_of(world, "fast")
        assert (state["state"], state["answer"]) == ("answered", sim_info_event("fast"))
