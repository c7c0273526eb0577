"""The command states service against a real server's database: the orderings the relay's
timing rarely shows (an answer racing the write of its command's state)."""

from __future__ import annotations

import asyncio

import orjson

from simbridge.config import Settings
from simbridge.models import CommandRecord
from simbridge.services.commands import ANSWER_WINDOW_SECONDS
from tests.helpers import PairedWorld, eventually, paired_world, receive, sim_info_event, socket


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
            commands.answered(host_id, req_id, answer)
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
        commands.handing_over("fast", host.owner.user_id, host.id, None, "GET_SIMS")
        commands.answered(host.id, "fast", answer)  # before the hand-over is over
        state = await state_of(world, "fast")
        assert (state["state"], state["answer"]) == ("answered", sim_info_event("fast"))


async def test_a_hosts_queue_is_written_by_one_at_a_time(settings: Settings) -> None:
    """The host connecting, a command queued meanwhile, another one after: each writes the
    queue in turn, never two at once (the same command would be written twice)."""
    async with paired_world(settings) as world:
        commands = world.live.runtime.commands
        host_id = world.pair.host.id
        inside, most = 0, 0

        async def write_queue() -> None:
            nonlocal inside, most
            async with commands.queue_of(host_id):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        async def first_then_a_third() -> None:
            await write_queue()
            # released, with the second about to take it: a third comes now
            await asyncio.create_task(write_queue())

        await asyncio.wait_for(asyncio.gather(first_then_a_third(), write_queue()), 5)
        assert most == 1


async def test_an_unanswered_command_is_stored_once_its_answer_window_passes(
    settings: Settings,
) -> None:
    """A sent command's row waits in memory for its answer, but not longer than the window:
    a crash loses no more than a log row would."""
    async with paired_world(settings) as world:
        host = world.pair.host
        async with socket(world.live, host) as host_ws:
            reply = await world.http.get(
                f"/sims?host_device_id={host.id}", headers=host.owner.headers
            )
            req_id = reply.json()["req_id"]
            assert (await receive(host_ws))["req_id"] == req_id

            async def stored() -> bool:
                return await CommandRecord.filter(req_id=req_id, state="sent").exists()

            assert await eventually(stored, timeout=4 * ANSWER_WINDOW_SECONDS)
