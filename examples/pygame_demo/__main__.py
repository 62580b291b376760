"""``python -m examples.pygame_demo``: the rtecs demo (see ``--help``)."""

from __future__ import annotations

import argparse
import os
import sys

from examples.pygame_demo.game import Options, run

EPILOG = """\
examples:
  python -m examples.pygame_demo --bots 3
      an embedded room server and three bots; arrows/WASD move, ENTER types the team name
  rtecs-server --bind tcp://0.0.0.0:7777 --plugin examples.pygame_demo.models:referee
  python -m examples.pygame_demo --connect tcp://HOST:7777 --name ann
      join a shared server from several machines
  python -m examples.pygame_demo --headless --frames 300 --bots 2 --screenshot demo.png
      no window: run 300 frames and save the last one
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.pygame_demo", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A shared world on rtecs: avatars, a team name everyone types, a tile "
                    "board and a counter validated by a server plugin, gems to pick up.")
    parser.add_argument("--connect", metavar="ENDPOINT",
                        help="join this room server (default: start an embedded one)")
    parser.add_argument("--room", default="demo", help="room name (default: %(default)s)")
    parser.add_argument("--name", default=os.environ.get("USER", "you"),
                        help="your avatar's name (default: $USER)")
    parser.add_argument("--bots", type=int, default=0, metavar="N",
                        help="simulated players in this process (default: 0)")
    parser.add_argument("--headless", action="store_true",
                        help="no window (SDL's dummy driver); implied without a display")
    parser.add_argument("--frames", type=int, metavar="N",
                        help="stop after N frames (default: run until closed; 300 headless)")
    parser.add_argument("--screenshot", metavar="PNG", help="save the last frame as a PNG")
    parser.add_argument("--fps", type=int, default=60, help="frame rate cap (default: 60)")
    parser.add_argument("--script", default="", metavar="STEPS",
                        help='scripted input, e.g. "move 1 0 30; type Blue Team; wait 60"')
    parser.add_argument("--report", metavar="JSON",
                        help="write what this client sees (avatars, team name) as JSON")
    parser.add_argument("--report-frame", type=int, metavar="N",
                        help="take the report at frame N instead of at the end")
    parser.add_argument("--report-when", metavar="FILE",
                        help="for tests of several demos: print 'settled' when the script "
                             "is done and every write answered; while FILE exists, rewrite "
                             "the --report whenever the view changes; stop once FILE is "
                             "removed")
    parser.add_argument("--data-dir", default="./rtecs-data", metavar="DIR",
                        help="where the embedded server keeps its SQLite rooms "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    headless = args.headless
    if not headless and sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("no display found: running headless (see --help)")
        headless = True
    frames = args.frames if args.frames is not None else (300 if headless else None)
    screenshot = args.screenshot or ("rtecs-demo.png" if headless else None)
    report = run(Options(connect=args.connect, room=args.room, name=args.name, bots=args.bots,
                         headless=headless, frames=frames, screenshot=screenshot, fps=args.fps,
                         script=args.script, report=args.report,
                         report_frame=args.report_frame, report_when=args.report_when,
                         data_dir=args.data_dir))
    if headless:
        print(f"ran {report['frames']} frames; team name {report['team_name']!r}; "
              f"avatars: {', '.join(sorted(report['avatars']))}; screenshot: {screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
