// Runs a program to completion for a test and captures what it printed.
//
// RunProgram(argv, stdin_text) forks, execs argv[0] with argv, feeds stdin_text, and returns
// the exit status (or 128 + signal) with stdout and stderr, read concurrently (poll) so that
// a chatty child never blocks on a full pipe.
#ifndef FLEETPMU_TESTS_SERVER_SUBPROCESS_H_
#define FLEETPMU_TESTS_SERVER_SUBPROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace fleetpmu::server::testing {

struct ProgramResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline ProgramResult RunProgram(const std::vector<std::string>& argv,
                                const std::string& stdin_text = "") {
  ProgramResult result;
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    return result;
  }
  // Built before fork: the child of a threaded process may only call async-signal-safe
  // functions until exec.
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execv(args[0], args.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  signal(SIGPIPE, SIG_IGN);
  if (!stdin_text.empty()) {
    ssize_t ignored = write(in[1], stdin_text.data(), stdin_text.size());
    (void)ignored;
  }
  close(in[1]);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buffer[4096];
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n > 0) {
        sinks[i]->append(buffer, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// A long-running child (a daemon under test): its stderr is read line by line, so a test can
// wait for "ready" without sleeping; Signal() and Wait() end it.
class RunningProgram {
 public:
  explicit RunningProgram(const std::vector<std::string>& argv) {
    int err[2];
    if (pipe2(err, O_CLOEXEC) != 0) return;
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(err[1], 2);
      execv(args[0], args.data());
      _exit(127);
    }
    close(devnull);
    close(err[1]);
    err_fd_ = err[0];
  }
  ~RunningProgram() {
    if (pid_ > 0 && !waited_) {
      kill(pid_, SIGKILL);
      Wait();
    }
    if (err_fd_ >= 0) close(err_fd_);
  }
  RunningProgram(const RunningProgram&) = delete;
  RunningProgram& operator=(const RunningProgram&) = delete;

  // Reads stderr until a line containing `needle`; returns it, or "" at end of file.
  std::string WaitForLine(const std::string& needle) {
    while (true) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        log_ += line + "\n";
        if (line.find(needle) != std::string::npos) return line;
        continue;
      }
      char chunk[4096];
      const ssize_t n = read(err_fd_, chunk, sizeof(chunk));
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  void Signal(int signal_number) { kill(pid_, signal_number); }

  // Waits for the exit; returns its status (128 + signal when killed). Reads the rest of
  // stderr into log().
  int Wait() {
    WaitForLine("\x01never\x01");
    log_ += buffer_;
    buffer_.clear();
    int status = 0;
    waitpid(pid_, &status, 0);
    waited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // Every stderr line read so far.
  const std::string& log() const { return log_; }

 private:
  pid_t pid_ = -1;
  int err_fd_ = -1;
  bool waited_ = false;
  std::string buffer_;
  std::string log_;
};

}  // namespace fleetpmu::server::testing

#endif  // FLEETPMU_TESTS_SERVER_SUBPROCESS_H_
