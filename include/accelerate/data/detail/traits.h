// accelerate/data/detail/traits.h: what a DataLoader asks of its data set type (get, get_batch,
// get_items, next/reset, set_epoch) and of its Collate (collate, to_device, pin_memory,
// to_tensors): detection traits, not for users.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/ArrayRef.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "accelerate/errors.h"

namespace accelerate {
namespace detail {

/// "accelerate: DataLoader: dataset.get(<index>) failed", for errors of `get`.
std::string get_failed_message(int64_t index);

/// "dataset.get_items([3, 7, ...]) failed (sample indices 3, 7, ...)"; `call` names the
/// function ("get_items", or torch::data's "get_batch").
std::string get_items_failed_message(const std::vector<int64_t>& indices,
                                     const char* call = "get_items");

template <typename C, typename B, typename = void>
struct HasToDevice : std::false_type {};
template <typename C, typename B>
struct HasToDevice<
    C, B, std::void_t<decltype(C::to_device(std::declval<B>(), c10::Device(c10::kCPU), false))>>
    : std::true_type {};
template <typename D, typename B, typename = void>
struct HasGetItems : std::false_type {};
template <typename D, typename B>
struct HasGetItems<D, B,
                   std::void_t<decltype(std::declval<D&>().get_items(
                       std::declval<const std::vector<int64_t>&>()))>>
    : std::is_convertible<
          decltype(std::declval<D&>().get_items(std::declval<const std::vector<int64_t>&>())), B> {
};

template <typename C, typename B, typename = void>
struct HasPinMemory : std::false_type {};
template <typename C, typename B>
struct HasPinMemory<C, B, std::void_t<decltype(C::pin_memory(std::declval<B>()))>>
    : std::true_type {};

/// `size()` of a data set as a number, whether it returns a number or an optional.
template <typename Dataset>
int64_t dataset_length(Dataset& dataset) {
  auto n = dataset.size();
  if constexpr (std::is_integral_v<decltype(n)>) {
    return static_cast<int64_t>(n);
  } else {
    if (!n.has_value()) throw InvalidArgument("accelerate: DataLoader: the data set has no size()");
    return static_cast<int64_t>(*n);
  }
}

template <typename D, typename = void>
struct HasNext : std::false_type {};
template <typename D>
struct HasNext<
    D, std::void_t<decltype(std::declval<D&>().next().has_value()),
                   decltype(*std::declval<D&>().next()), decltype(std::declval<D&>().reset())>>
    : std::true_type {};
template <typename D, typename = void>
struct HasGet : std::false_type {};
template <typename D>
struct HasGet<D, std::void_t<decltype(std::declval<D&>().get(size_t{}))>> : std::true_type {};
template <typename D, typename = void>
struct HasSetEpoch : std::false_type {};
template <typename D>
struct HasSetEpoch<D, std::void_t<decltype(std::declval<D&>().set_epoch(int64_t{}))>>
    : std::true_type {};
template <typename C, typename B, typename = void>
struct HasTensors : std::false_type {};
template <typename C, typename B>
struct HasTensors<C, B,
                  std::void_t<decltype(C::to_tensors(std::declval<const B&>())),
                              decltype(C::from_tensors(std::declval<std::vector<at::Tensor>>()))>>
    : std::true_type {};

/// A torch::data batch data set: `get_batch(c10::ArrayRef<size_t>)` (e.g. a `MapDataset`
/// made by `.map(transform)`), which the loader uses when there is no `get(size_t)`.
template <typename D, typename = void>
struct HasGetBatch : std::false_type {};
template <typename D>
struct HasGetBatch<
    D, std::void_t<decltype(std::declval<D&>().get_batch(std::declval<c10::ArrayRef<size_t>>()))>>
    : std::true_type {};
/// What `get_batch` returns.
template <typename D>
using GetBatchResult =
    std::decay_t<decltype(std::declval<D&>().get_batch(std::declval<c10::ArrayRef<size_t>>()))>;

template <typename T>
struct IsVector : std::false_type {};
template <typename T, typename A>
struct IsVector<std::vector<T, A>> : std::true_type {};
/// The element type of a std::vector, else the type itself.
template <typename T>
struct ElementOr {
  using type = T;
};
template <typename T, typename A>
struct ElementOr<std::vector<T, A>> {
  using type = T;
};
template <typename T, typename = void>
struct IsOptionalLike : std::false_type {};
template <typename T>
struct IsOptionalLike<
    T, std::void_t<decltype(std::declval<T&>().has_value()), decltype(*std::declval<T&>())>>
    : std::true_type {};

/// How a map-style data set gives its samples: one by one (`get`), or a batch at a time
/// (`get_batch`, no `get`): a list of examples to collate, or one batch already made (a
/// torch::data `Stack`).
enum class Fetch { Sample, ExampleList, WholeBatch, Stream };
template <typename Dataset>
constexpr Fetch fetch_of() {
  if constexpr (HasGet<Dataset>::value) {
    return Fetch::Sample;
  } else if constexpr (HasGetBatch<Dataset>::value) {
    return IsVector<GetBatchResult<Dataset>>::value ? Fetch::ExampleList : Fetch::WholeBatch;
  } else {
    return Fetch::Stream;
  }
}

/// What a data set yields: `get(i)` of a map-style one, an element of `get_batch`'s list, the
/// batch `get_batch` makes, or `*next()` of an iterable one.
template <typename Dataset, typename = void>
struct ExampleOf {
  static_assert(HasGet<Dataset>::value || HasNext<Dataset>::value,
                "accelerate: DataLoader: a data set needs `get(size_t)` and `size()` "
                "(map-style), `get_batch(c10::ArrayRef<size_t>)` and `size()` (torch::data, "
                "e.g. after .map(...)), or `std::optional<Example> next()` and `void reset()` "
                "(iterable)");
  using type = void;
};
template <typename Dataset>
struct ExampleOf<Dataset, std::enable_if_t<HasGet<Dataset>::value>> {
  using type = std::decay_t<decltype(std::declval<Dataset&>().get(size_t{}))>;
};
template <typename Dataset>
struct ExampleOf<Dataset,
                 std::enable_if_t<!HasGet<Dataset>::value && HasGetBatch<Dataset>::value>> {
  static_assert(!IsOptionalLike<GetBatchResult<Dataset>>::value,
                "accelerate: DataLoader: get_batch returns an optional (a stateful torch::data "
                "data set, e.g. ChunkDataset): give the data set `std::optional<Example> next()` "
                "and `void reset()` instead (an iterable data set)");
  using type = typename ElementOr<GetBatchResult<Dataset>>::type;
};
template <typename Dataset>
struct ExampleOf<Dataset,
                 std::enable_if_t<!HasGet<Dataset>::value && !HasGetBatch<Dataset>::value &&
                                  HasNext<Dataset>::value>> {
  using type = std::decay_t<decltype(*std::declval<Dataset&>().next())>;
};

template <typename C, typename E, typename = void>
struct HasCollate : std::false_type {};
template <typename C, typename E>
struct HasCollate<C, E, std::void_t<decltype(C::collate(std::declval<std::vector<E>>()))>>
    : std::true_type {};
/// The batch a loader yields: what `Collate<Example>::collate` makes, or the batch a whole-batch
/// data set makes (with no collation, a placeholder: the DataLoader's static_assert speaks).
template <typename C, typename E, bool kWhole, typename = void>
struct BatchOf {
  using type = std::vector<E>;
};
template <typename C, typename E>
struct BatchOf<C, E, true, void> {
  using type = E;
};
template <typename C, typename E>
struct BatchOf<C, E, false, std::enable_if_t<HasCollate<C, E>::value>> {
  using type = decltype(C::collate(std::declval<std::vector<E>>()));
};

}  // namespace detail
}  // namespace accelerate
