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
  servers' configuration files). Here operators are accounts named by ``--oper``, so the server
  starts with ``--oper operuser`` and the account is registered once the server listens;
- the account-registration options: this server lets clients register an account once they are
  connected (not before), without an e-mail address. A test configured for another policy
  (e-mail required, registration before connecting) is reported as not implemented, and so
  skipped.
"""

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
        if config.account_registration_before_connect:
            # REGISTER is answered COMPLETE_CONNECTION_REQUIRED until the client is registered
            # (docs/irc.md), as a test of that policy expects.
            raise NotImplementedByController("account registration before connecting")
        self._oper_registered = False
        super().run(hostname, port, **kwargs)

    def execute(self, command, **kwargs):
        if any(str(part).endswith("chat-server") for part in command):
            command = list(command) + ["--oper", OPER_NAME]
        return super().execute(command, **kwargs)

    def wait_for_port(self):
        super().wait_for_port()
        if not self._oper_registered:
            self._oper_registered = True
            self.registerUser(None, OPER_NAME, OPER_PASSWORD)

    def registerUser(self, case, username, password=None):
        """The shared controller's, once the server listens: tests register before connecting."""
        self.wait_for_port()
        super().registerUser(case, username, password)

    def wait_for_services(self):
        """Accounts are the server's own: they are up when its port is."""
        self.wait_for_port()


def get_irctest_controller_class() -> Type[FullChatroomController]:
    return FullChatroomController
