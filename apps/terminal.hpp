// The host side of the serial console for `apiary run`: the terminal in raw
// mode (restored on every exit path), guest output to stdout, and an input
// pump from stdin to the UART.
//
// On a TTY every keystroke goes to the guest except the detach key (Ctrl-]).
// On a pipe, input is passed through line by line, paced by the UART's host
// queue, so a test can script a session; end of input leaves the guest
// running until it exits or the deadline passes.
#pragma once

#include <termios.h>

#include <atomic>
#include <functional>
#include <span>
#include <thread>

namespace apiary::apps {

inline constexpr unsigned char kDetachKey = 0x1d;  // Ctrl-]
inline constexpr const char* kDetachKeyName = "Ctrl-]";

class RawTerminal {
 public:
  // Puts `fd` in raw mode if it is a TTY; no-op otherwise.
  explicit RawTerminal(int fd);
  ~RawTerminal();
  bool active() const noexcept { return active_; }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  int fd_;
  bool active_ = false;
  termios saved_{};
};

// Reads stdin on its own thread. `send` gets bytes for the guest and returns
// how many it accepted (the rest are offered again); `detach` is called when
// the detach key is pressed on a TTY.
class InputPump {
 public:
  using Send = std::function<size_t(std::span<const unsigned char>)>;
  InputPump(int fd, bool tty, Send send, std::function<void()> detach);
  ~InputPump();  // stops and joins

 private:
  void loop();
  int fd_;
  bool tty_;
  Send send_;
  std::function<void()> detach_;
  int wake_pipe_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace apiary::apps
