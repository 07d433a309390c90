#include "actors/console_actor.hpp"

#include <mutex>

#include "actors/errors.hpp"

namespace apiary::actors {

namespace {

// Shared between the UART's listener (vCPU threads) and the actor.
// Every byte has an offset in the console's output stream (ConsoleBackend's
// total count), so a reader attached at offset N gets the history up to N
// and exactly the flushed bytes from N on: nothing twice, nothing lost.
struct OutputBuffer {
  std::mutex mutex;
  std::string pending;
  uint64_t flushed = 0;  // stream offset of pending[0]
};

struct Reader {
  caf::actor actor;
  uint64_t from = 0;  // first stream offset this reader has not seen
};

struct ConsoleState {
  std::shared_ptr<devices::Machine> machine;
  devices::ConsoleBackend* backend = nullptr;
  devices::Uart16550* uart = nullptr;
  std::shared_ptr<OutputBuffer> buffer;
  std::vector<Reader> readers;
  caf::actor writer;
  caf::actor on_first_attach;
  bool announced = false;
  static inline const char* name = "console";
};
using console_pointer = console_actor::stateful_pointer<ConsoleState>;

void drop_reader(console_pointer self, const caf::actor_addr& who) {
  auto& st = self->state;
  st.readers.erase(std::remove_if(st.readers.begin(), st.readers.end(),
                                  [&](const Reader& r) { return r.actor.address() == who; }),
                   st.readers.end());
  if (st.writer && st.writer.address() == who) st.writer = nullptr;
}

console_actor::behavior_type console_impl(console_pointer self, std::shared_ptr<devices::Machine> machine,
                                          caf::actor on_first_attach) {
  auto& st = self->state;
  devices::ConsoleBackend* backend = &machine->console();
  devices::Uart16550* uart = &machine->com1();
  st.machine = std::move(machine);
  st.backend = backend;
  st.uart = uart;
  st.on_first_attach = std::move(on_first_attach);
  st.buffer = std::make_shared<OutputBuffer>();
  st.buffer->flushed = backend->total_bytes();  // earlier output is history only
  auto me = caf::actor_cast<caf::actor>(self);
  backend->set_listener([buf = st.buffer, me](std::span<const uint8_t> bytes) {
    bool was_empty;
    {
      std::lock_guard lock(buf->mutex);
      was_empty = buf->pending.empty();
      buf->pending.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
    if (was_empty) caf::anon_send(me, flush_atom::value);
  });
  // Captures the machine: the functor may run after the state is gone.
  self->attach_functor([m = st.machine] { m->console().set_listener(nullptr); });
  self->set_down_handler([=](caf::down_msg& dm) { drop_reader(self, dm.source); });
  return {
      [=](attach_atom, caf::actor reader, bool want_writer) -> caf::result<std::string, bool> {
        auto& s = self->state;
        if (!reader) return make_error(ActorErrc::invalid_argument, "attach: no reader");
        self->monitor(reader);
        uint64_t total = 0;
        std::string history;
        {
          std::lock_guard lock(s.buffer->mutex);
          history = s.backend->history(total);
        }
        s.readers.push_back({reader, total});
        bool granted = false;
        if (want_writer && !s.writer) {
          s.writer = reader;
          granted = true;
        }
        if (!s.announced && s.on_first_attach) {
          s.announced = true;
          caf::anon_send(s.on_first_attach, cond_met_atom::value, std::string("console"));
        }
        return {std::move(history), granted};
      },
      [=](detach_atom, caf::actor reader) -> ack_atom {
        if (reader) {
          self->demonitor(reader);
          drop_reader(self, reader.address());
        }
        return ack_atom::value;
      },
      [=](input_atom, caf::actor writer, const std::string& bytes) -> caf::result<uint64_t> {
        auto& s = self->state;
        if (!s.writer || !writer || s.writer.address() != writer.address())
          return make_error(ActorErrc::not_writer, "console input from an actor that does not hold the writer slot");
        return static_cast<uint64_t>(
            s.uart->input({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}));
      },
      [=](history_atom) -> std::string { return self->state.backend->history(); },
      [=](flush_atom) {
        auto& s = self->state;
        std::string out;
        uint64_t offset = 0;
        {
          std::lock_guard lock(s.buffer->mutex);
          out.swap(s.buffer->pending);
          offset = s.buffer->flushed;
          s.buffer->flushed += out.size();
        }
        if (out.empty()) return;
        const uint64_t end = offset + out.size();
        for (auto& r : s.readers) {
          if (r.from >= end) continue;  // already in the history it got at attach
          const size_t skip = r.from > offset ? static_cast<size_t>(r.from - offset) : 0;
          caf::anon_send(r.actor, output_atom::value, out.substr(skip));
          r.from = end;
        }
      },
  };
}

}  // namespace

console_actor spawn_console(caf::actor_system& sys, std::shared_ptr<devices::Machine> machine,
                            caf::actor on_first_attach) {
  return sys.spawn(console_impl, std::move(machine), std::move(on_first_attach));
}

}  // namespace apiary::actors
