#include "apps/terminal.hpp"

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace apiary::apps {

RawTerminal::RawTerminal(int fd) : fd_(fd) {
  if (!::isatty(fd) || ::tcgetattr(fd, &saved_) != 0) return;
  termios raw = saved_;
  ::cfmakeraw(&raw);
  raw.c_oflag |= OPOST;  // keep "\n" -> "\r\n" for our own messages
  if (::tcsetattr(fd, TCSANOW, &raw) == 0) active_ = true;
}

RawTerminal::~RawTerminal() {
  if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
}

InputPump::InputPump(int fd, bool tty, Send send, std::function<void()> detach)
    : fd_(fd), tty_(tty), send_(std::move(send)), detach_(std::move(detach)) {
  if (::pipe(wake_pipe_) != 0) wake_pipe_[0] = wake_pipe_[1] = -1;
  thread_ = std::thread([this] { loop(); });
}

InputPump::~InputPump() {
  stop_ = true;
  if (wake_pipe_[1] >= 0) {
    const char c = 0;
    [[maybe_unused]] auto n = ::write(wake_pipe_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (int f : wake_pipe_)
    if (f >= 0) ::close(f);
}

void InputPump::loop() {
  std::string pending;  // accepted by us, not yet by the guest
  bool eof = false;
  while (!stop_) {
    // Offer what is pending; back off briefly while the guest's queue is full.
    while (!pending.empty() && !stop_) {
      const size_t n = send_({reinterpret_cast<const unsigned char*>(pending.data()), pending.size()});
      pending.erase(0, n);
      if (n == 0) break;
    }
    pollfd fds[2] = {{eof ? -1 : fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    const int timeout_ms = pending.empty() ? -1 : 2;
    if (::poll(fds, 2, timeout_ms) < 0) continue;
    if (fds[1].revents) break;
    if (!(fds[0].revents & (POLLIN | POLLHUP))) continue;
    char buf[512];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) {
      eof = true;  // keep running: the guest decides when it is done
      continue;
    }
    for (ssize_t i = 0; i < n; ++i) {
      if (tty_ && static_cast<unsigned char>(buf[i]) == kDetachKey) {
        detach_();
        return;
      }
    }
    pending.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace apiary::apps
