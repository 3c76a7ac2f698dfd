#include "relay/app/commands.hpp"

int main(int argc, char** argv) { return outbox::run_command_line(argc, argv); }
