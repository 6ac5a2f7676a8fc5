// accelerate/errors.h: what the library throws.
//
// Every message starts with "accelerate: <api>: " (the function or class that was called) and
// names what is wrong: the file and the key, the rank and what it passed, expected against
// got. Three kinds, each a standard exception so that existing handlers keep working:
//
//   InvalidArgument   (std::invalid_argument) bad input: an argument, an option, or
//                     processes that disagree about a collective's arguments. Nothing ran.
//   DistributedError  (std::runtime_error) the job's communication failed: joining the
//                     process group, a collective or the DDP all-reduce failed or timed out,
//                     or a peer process ended. The message says where every process was.
//   FileError         (std::runtime_error) a file or folder could not be read or written (a
//                     full disk, permissions), or its content is not what it must be.
//
// Example:
//   try {
//     accelerator.load_state("ckpt");
//   } catch (const accelerate::FileError& e) {
//     std::cerr << e.what() << "\n";  // "accelerate: load_state: ckpt/optimizer.bin: ..."
//   }
#pragma once

#include <stdexcept>

namespace accelerate {

/// Bad input: an argument, an option, or processes that disagree about a collective.
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Joining the process group, a collective or the DDP all-reduce failed or timed out.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file or folder could not be read or written, or holds what it must not.
class FileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace accelerate
