"""irctest controller for the whole server: the shared one, plus what a server with built-in accounts
offers the suite's ``services`` tests and its operator tests.

benchmarks/irctest.sh copies this file into its private copy of the suite as
``irctest/controllers/chatroom_full.py`` and runs with ``--controller
irctest.controllers.chatroom_full``. It extends the shared controller (``chatroom.py``, which stays
as the suite's copy has it) with:

- services: accounts are part of the server, so they are up as soon as its port is
  (``wait_for_services``); ``registerUser`` is the shared controller's (NICK and REGISTER on the
  native port), after waiting for the server to listen (tests register before their first client
  connects, which is what waits otherwise);
- an operator: the suite's tests send ``OPER operuser operpassword`` (an operator block in other
  servers' configuration files). Here operators are accounts named by ``--oper``: the account is
  made with ``chat-server account add`` in the server's data directory, and the server starts
  with ``--oper operuser``;
- the account-registration options: registration before connecting is the server's
  ``--register-before-connect`` (on or off, as the test asks); no e-mail address is ever asked
  for, so a test that wants one to be is reported as not implemented, and so skipped.
"""

import subprocess
from typing import Type

from irctest.controllers.chatroom import ChatroomController
from irctest.runner import NotImplementedByController

OPER_NAME = "operuser"
OPER_PASSWORD = "operpassword"


class FullChatroomController(ChatroomController):
    def run(self, hostname, port, **kwargs):
        config = self.test_config
        if config.account_registration_requires_email:
            raise NotImplementedByController("account registration that requires an e-mail address")
        self._before_connect = config.account_registration_before_connect
        super().run(hostname, port, **kwargs)

    def execute(self, command, **kwargs):
        command = [str(part) for part in command]
        if command[1].endswith("chat-server") and "--data-dir" in command:
            # The operator's account exists before the server starts, as an operator would make
            # it: chat-server account add (docs/operations.md).
            data_dir = command[command.index("--data-dir") + 1]
            subprocess.run(command[:2] + ["account", "add", OPER_NAME, "--data-dir", data_dir],
                           input=OPER_PASSWORD + "\n", text=True, check=True, timeout=60,
                           capture_output=True, cwd=kwargs.get("cwd"))
            command += ["--oper", OPER_NAME, "--register-before-connect",
                        "on" if self._before_connect else "off"]
        return super().execute(command, **kwargs)

    def registerUser(self, case, username, password=None):
        """The shared controller's, once the server listens: tests register before connecting."""
        self.wait_for_port()
        super().registerUser(case, username, password)

    def wait_for_services(self):
        """Accounts are the server's own: they are up when its port is."""
        self.wait_for_port()


def get_irctest_controller_class() -> Type[FullChatroomController]:
    return FullChatroomController
